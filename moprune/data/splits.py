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
