"""CIFAR-10 from the standard ``cifar-10-batches-py`` folder."""

import io
import os
import pickle
from typing import Union

import numpy as np

from moprune.data.splits import Splits, as_dataset, check_arrays
from moprune.exceptions import DataError
from moprune.validation import check_int

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and numpy arrays: no code runs."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _read_batch(path):
    if not os.path.isfile(path):
        raise DataError(f"{path} not found")
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(io.BufferedReader(f), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: missing 'data' or 'labels' (keys: {sorted(batch)})")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: data {data.shape} and labels {labels.shape} are not N x 3072 and N")
    check_arrays(data, labels, n_classes=10, where=path)
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(folder: Union[str, "os.PathLike[str]"], *, val_size: int = 5_000) -> Splits:
    """Load CIFAR-10 from ``cifar-10-batches-py`` (``data_batch_1..5`` and ``test_batch``).

    The last ``val_size`` training images become the validation split (45,000 / 5,000 / 10,000).

    Returns:
        ``Splits(train, val, test)`` with float32 images ``N x 3 x 32 x 32`` in [0, 1].
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"folder {folder!r} does not exist")
    nested = os.path.join(folder, "cifar-10-batches-py")
    if not os.path.isfile(os.path.join(folder, "test_batch")) and os.path.isdir(nested):
        folder = nested
    parts = [_read_batch(os.path.join(folder, f"data_batch_{i}")) for i in range(1, 6)]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    check_int("val_size", val_size, low=1, high=len(x) - 1)
    test_x, test_y = _read_batch(os.path.join(folder, "test_batch"))
    cut = len(x) - val_size
    return Splits(as_dataset(x[:cut], y[:cut]), as_dataset(x[cut:], y[cut:]), as_dataset(test_x, test_y))
