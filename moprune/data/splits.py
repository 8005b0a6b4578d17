"""The train/validation/test container shared by every loader."""

import os
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from moprune.validation import check_int


class Splits(NamedTuple):
    """Train, validation and test splits, each a ``TensorDataset(images, labels)``.

    Search reads ``val``; ``test`` is only for final reporting.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


def cache_dir():
    """The folder where moprune caches data and weights: ``$MOPRUNE_CACHE`` or ``~/.cache/moprune``."""
    return os.environ.get("MOPRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "moprune")


def check_arrays(images, labels, *, n_classes, where, image_shape=None):
    """Check one split's arrays before they become a dataset.

    Args:
        images: ``N x ...`` array of images.
        labels: ``N`` class indices.
        n_classes: Labels must lie in ``[0, n_classes)``.
        where: What to name in the message (the file and the split).
        image_shape: The shape one image must have (``None``: any).

    Raises:
        DataError: a shape, a dtype or a label out of range, named with ``where``.
    """
    from moprune.exceptions import DataError

    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim != 1 or images.ndim < 2 or len(images) != len(labels):
        raise DataError(f"{where}: images of shape {images.shape} and labels of shape {labels.shape} do not pair up "
                        "(expected N x ... images and N labels)")
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise DataError(f"{where}: images have shape {tuple(images.shape[1:])}, expected {tuple(image_shape)}")
    if images.dtype.kind not in "uif":
        raise DataError(f"{where}: images have dtype {images.dtype}, expected numbers")
    if labels.dtype.kind not in "ui":
        raise DataError(f"{where}: labels have dtype {labels.dtype}, expected integer class indices")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{where}: labels range over [{labels.min()}, {labels.max()}], expected [0, {n_classes - 1}]")


def as_dataset(images, labels):
    """Wrap uint8/float arrays as a float32 image / int64 label ``TensorDataset``."""
    images = torch.from_numpy(np.array(images))  # a writable copy, never a view of a file buffer
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    return TensorDataset(images.float(), torch.from_numpy(np.array(labels, dtype=np.int64)))


def subset(dataset, n, *, generator=None):
    """The first ``n`` samples of ``dataset`` (or ``n`` random ones when ``generator`` is given).

    Args:
        dataset: A ``TensorDataset``.
        n: How many samples to keep, ``1 <= n <= len(dataset)``.
        generator: Optional ``torch.Generator`` for a random (but reproducible) subset.
    """
    size = len(dataset)
    n = check_int("n", n, low=1, high=size)
    if generator is None:
        index = torch.arange(n)
    else:
        index = torch.randperm(size, generator=generator)[:n]
    return TensorDataset(*(t[index] for t in dataset.tensors))
