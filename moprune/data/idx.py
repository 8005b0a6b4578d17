"""MNIST in the standard IDX format (the files torchvision keeps under ``MNIST/raw``)."""

import gzip
import os
from typing import Union

import numpy as np

from moprune.data.splits import Splits, as_dataset, check_arrays
from moprune.exceptions import DataError
from moprune.validation import check_int

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path):
    """Read one IDX file (optionally gzipped) into a numpy array.

    Raises:
        DataError: naming the file and what was wrong with it.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (the first two bytes must be zero)")
    dtype, ndim = data[2], data[3]
    if dtype not in _DTYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{dtype:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes, expected at least {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    item = np.dtype(_DTYPES[dtype]).itemsize
    expected = header + int(np.prod(shape)) * item
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=_DTYPES[dtype], offset=header).reshape(shape)


def _find(folder, stem):
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise DataError(f"{os.path.join(folder, stem)} not found (also looked for .gz)")


def load_mnist_idx(folder: Union[str, "os.PathLike[str]"], *, val_size: int = 10_000) -> Splits:
    """Load MNIST from a folder of IDX files.

    The folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (optionally ``.gz``), or is a
    torchvision root with them in ``MNIST/raw``. The last ``val_size`` training images become
    the validation split (60,000 -> the classic 50,000 / 10,000).

    Returns:
        ``Splits(train, val, test)`` with float32 images ``N x 1 x H x W`` in [0, 1].
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"folder {folder!r} does not exist")
    nested = os.path.join(folder, "MNIST", "raw")
    if not any(os.path.exists(os.path.join(folder, f)) for f in (_FILES["train_x"], _FILES["train_x"] + ".gz")):
        if os.path.isdir(nested):
            folder = nested
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in _FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"{_find(folder, _FILES[split + '_x'])}: images {x.shape} do not match labels {y.shape}"
            )
        check_arrays(x, y, n_classes=10, where=f"{_find(folder, _FILES[split + '_y'])}")
    n_train = len(arrays["train_x"])
    check_int("val_size", val_size, low=1, high=n_train - 1)
    x = arrays["train_x"][:, None]
    y = arrays["train_y"]
    cut = n_train - val_size
    return Splits(
        as_dataset(x[:cut], y[:cut]),
        as_dataset(x[cut:], y[cut:]),
        as_dataset(arrays["test_x"][:, None], arrays["test_y"]),
    )
