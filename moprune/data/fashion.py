"""Fashion-MNIST (Zalando, MIT license) from the Debian package ``dataset-fashion-mnist``, offline and verified.

Where :func:`load_fashion_mnist` looks, in order: the cache (the converted ``fashion-mnist.npz``,
then the four files that :func:`fetch_fashion_mnist` extracted there); a folder given by the
caller; the installed Debian package in :data:`SYSTEM_FOLDER`. The Debian files are
verified by SHA-256 before they are read; a folder of the caller's own (e.g. upstream's files,
whose bytes differ from Debian's in the gzip headers) is checked by shape and label range instead.
"""

import os
import shutil
import subprocess
import tempfile
import warnings
import zipfile
import zlib
from typing import Dict, Optional, Union

import numpy as np

from moprune.data.idx import read_idx
from moprune.data.mnist import sha256
from moprune.data.splits import Splits, as_dataset, cache_dir, check_arrays
from moprune.exceptions import DataError
from moprune.io import atomic_path
from moprune.logging import get_logger

#: Debian package that ships the four IDX files.
DEBIAN_PACKAGE = "dataset-fashion-mnist"
#: Where the Debian package installs them.
SYSTEM_FOLDER = "/usr/share/datasets/fashion-mnist"
#: SHA-256 of the four ``.gz`` files of ``dataset-fashion-mnist`` 0.0~git20200523.55506a9-1.
FASHION_MNIST_SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
#: The class names, in label order.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")

_FILES = {"train_x": "train-images-idx3-ubyte.gz", "train_y": "train-labels-idx1-ubyte.gz",
          "test_x": "t10k-images-idx3-ubyte.gz", "test_y": "t10k-labels-idx1-ubyte.gz"}
_N_TRAIN, _N_TEST = 60_000, 10_000
_VAL_SIZE = 10_000
_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
_NPZ = "fashion-mnist.npz"
_RAW = "fashion-mnist"
_log = get_logger("data")


def _ways(*, apt: bool = True) -> str:
    """The ways to get the data, for error messages (``apt=False``: where ``apt-get`` is missing)."""
    folder = (f"pass a folder holding the four IDX files ({', '.join(_FILES.values())}; torchvision's "
              "FashionMNIST/raw works) as folder= (command line: --data fashion-mnist:FOLDER)")
    if not apt:
        return (f"{folder}, or install the Debian package {DEBIAN_PACKAGE} on a Debian/Ubuntu machine and copy "
                f"its {SYSTEM_FOLDER}/")
    return (f"install the Debian package (`apt-get install {DEBIAN_PACKAGE}`, as root; it puts the files in "
            f"{SYSTEM_FOLDER}/), run `moprune data fetch fashion-mnist` (no root: apt-get download and dpkg-deb -x "
            f"into the cache), or {folder}")


def raw_folder(cache: Optional[str] = None) -> str:
    """The cache folder where :func:`fetch_fashion_mnist` puts the four ``.gz`` files."""
    return os.path.join(cache or cache_dir(), _RAW)


def verify_files(folder: Union[str, "os.PathLike[str]"]) -> None:
    """Check the SHA-256 of the four Debian ``.gz`` files in ``folder``.

    Raises:
        DataError: a file is missing, or its digest differs (naming the file, the expected and
            the actual digest).
    """
    folder = os.fspath(folder)
    for name, expected in FASHION_MNIST_SHA256.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataError(f"{path} not found; {_ways()}")
        actual = sha256(path)
        if actual != expected:
            raise DataError(f"checksum mismatch for {path}: expected SHA-256 {expected} (Debian package "
                            f"{DEBIAN_PACKAGE}), got {actual}; refusing to read it")


def _locate(folder):
    """The four file paths in ``folder`` (or its ``FashionMNIST/raw``), ``.gz`` or not."""
    if not os.path.isdir(folder):
        raise DataError(f"folder {folder!r} does not exist")
    nested = os.path.join(folder, "FashionMNIST", "raw")
    if os.path.isdir(nested) and not any(os.path.exists(os.path.join(folder, f[:-3] + ext))
                                         for f in _FILES.values() for ext in ("", ".gz")):
        folder = nested
    paths = {}
    for key, name in _FILES.items():
        for candidate in (name, name[:-3]):
            if os.path.isfile(os.path.join(folder, candidate)):
                paths[key] = os.path.join(folder, candidate)
                break
        else:
            raise DataError(f"{os.path.join(folder, name)} not found (nor without .gz); a Fashion-MNIST folder holds "
                            f"{', '.join(_FILES.values())}")
    return paths


def _read(paths):
    """uint8 images ``N x 28 x 28`` and int64 labels of both files, checked by shape and label range."""
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split, n in (("train", _N_TRAIN), ("test", _N_TEST)):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.shape != (n, 28, 28) or x.dtype != np.uint8:
            raise DataError(f"{paths[split + '_x']}: images of shape {x.shape} and dtype {x.dtype}, expected "
                            f"({n}, 28, 28) uint8")
        if y.shape != (n,):
            raise DataError(f"{paths[split + '_y']}: labels of shape {y.shape}, expected ({n},)")
        check_arrays(x, y, n_classes=10, where=paths[split + "_y"])
    return arrays


def _convert(paths, npz_path):
    arrays = _read(paths)
    cut = _N_TRAIN - _VAL_SIZE
    out = {"train_x": arrays["train_x"][:cut], "train_y": arrays["train_y"][:cut],
           "val_x": arrays["train_x"][cut:], "val_y": arrays["train_y"][cut:],
           "test_x": arrays["test_x"], "test_y": arrays["test_y"]}
    out = {k: v[:, None] if k.endswith("_x") else v.astype(np.int64) for k, v in out.items()}
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as f:  # np.savez appends .npz to a bare path; a file object keeps the name
            np.savez(f, **out)
    _log.info("converted Fashion-MNIST from %s to %s", os.path.dirname(paths["train_x"]), npz_path)


def _source(folder, cache):
    """The four files to convert: the fetched copy in the cache, the caller's folder, or the Debian package."""
    fetched = raw_folder(cache)
    if all(os.path.isfile(os.path.join(fetched, name)) for name in _FILES.values()):
        verify_files(fetched)
        return {key: os.path.join(fetched, name) for key, name in _FILES.items()}
    if folder is not None:
        folder = os.fspath(folder)
        paths = _locate(folder)
        if all(os.path.basename(p) in FASHION_MNIST_SHA256 and sha256(p) == FASHION_MNIST_SHA256[os.path.basename(p)]
               for p in paths.values()):
            return paths
        warnings.warn(f"the Fashion-MNIST files in {folder} are not the Debian package's (their SHA-256 differ; "
                      "upstream's files differ in their gzip headers): checked by shape and label range instead",
                      UserWarning, stacklevel=3)
        return paths
    if all(os.path.isfile(os.path.join(SYSTEM_FOLDER, name)) for name in _FILES.values()):
        verify_files(SYSTEM_FOLDER)
        return {key: os.path.join(SYSTEM_FOLDER, name) for key, name in _FILES.items()}
    raise DataError(f"Fashion-MNIST not found (looked for {os.path.join(cache, _NPZ)}, the files in "
                    f"{raw_folder(cache)}/ and in {SYSTEM_FOLDER}/); to get it: {_ways()}")


def load_fashion_mnist(*, folder: Optional[Union[str, "os.PathLike[str]"]] = None,
                       cache: Optional[str] = None) -> Splits:
    """Load Fashion-MNIST as ``Splits(train, val, test)`` of 50,000 / 10,000 / 10,000 images.

    The last 10,000 training images are the validation split. Images are float32
    ``N x 1 x 28 x 28`` in [0, 1], labels int64 (class names in :data:`FASHION_MNIST_CLASSES`).
    Where it looks, in order: the cache (``fashion-mnist.npz``, then the files
    :func:`fetch_fashion_mnist` put there); ``folder``; :data:`SYSTEM_FOLDER` (the Debian package
    ``dataset-fashion-mnist``). The first load verifies the SHA-256 of the Debian files (a
    ``folder`` of other files, e.g. upstream's, is checked by shape and label range, with a
    warning) and writes the npz atomically (uint8 images, 55 MB); later loads read it, whatever
    ``folder`` says (delete the npz to convert another source).

    Args:
        folder: A folder of the four IDX files (``.gz`` or not, or a torchvision root with
            ``FashionMNIST/raw``), used when the cache has no npz yet.
        cache: Cache folder (default: :func:`moprune.data.cache_dir`).

    Raises:
        DataError: No source has the data (the message names the ways to get it), a checksum
            differs (naming the file and both digests) or a file is malformed.
    """
    cache = cache or cache_dir()
    npz_path = os.path.join(cache, _NPZ)
    if not os.path.isfile(npz_path):
        _convert(_source(folder, cache), npz_path)
    rebuild = "delete it and the next load rebuilds it from the verified files"
    try:
        with np.load(npz_path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in _KEYS}
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"the cached Fashion-MNIST file {npz_path} is corrupt, truncated or incomplete "
                        f"({type(exc).__name__}: {exc}); {rebuild}") from None
    splits = []
    for name, size in (("train", _N_TRAIN - _VAL_SIZE), ("val", _VAL_SIZE), ("test", _N_TEST)):
        x, y = arrays[f"{name}_x"], arrays[f"{name}_y"]
        where = f"the cached Fashion-MNIST file {npz_path} ({name} split)"
        try:
            check_arrays(x, y, n_classes=10, where=where, image_shape=(1, 28, 28))
            if len(x) != size or x.dtype != np.uint8:
                raise DataError(f"{where} holds {len(x)} images of dtype {x.dtype}, expected {size} uint8 images")
        except DataError as exc:
            raise DataError(f"{exc}; {rebuild}") from None
        splits.append(as_dataset(x, y))
    return Splits(*splits)


def _run(command, *, cwd, what):
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise DataError(f"{what} did not finish in 10 minutes: {' '.join(command)}") from None
    return done


def fetch_fashion_mnist(*, cache: Optional[str] = None, apt_get: Optional[str] = None,
                        dpkg_deb: Optional[str] = None) -> str:
    """Put the four verified Fashion-MNIST files into the cache, without root.

    Downloads the Debian package ``dataset-fashion-mnist`` with ``apt-get download`` into a
    temporary folder (first running ``apt-get update`` into private package lists in that
    folder when the system's lists do not know the package, as on a fresh machine), extracts it
    there with ``dpkg-deb -x``, verifies the SHA-256 of the four ``.gz`` files and copies just
    them into :func:`raw_folder` (atomically). Nothing is installed system-wide. When the cache
    already holds the verified files, it returns at once.

    Args:
        cache: Cache folder (default: :func:`moprune.data.cache_dir`).
        apt_get: The ``apt-get`` program (default: found on ``PATH``).
        dpkg_deb: The ``dpkg-deb`` program (default: found on ``PATH``).

    Returns:
        The folder holding the four files.

    Raises:
        DataError: ``apt-get`` or ``dpkg-deb`` is missing (naming the other ways to get the
            data), the download fails, or a checksum differs.
    """
    target = raw_folder(cache)
    if all(os.path.isfile(os.path.join(target, name)) for name in FASHION_MNIST_SHA256):
        verify_files(target)
        _log.info("Fashion-MNIST already in %s", target)
        return target
    apt_get = apt_get or shutil.which("apt-get")
    dpkg_deb = dpkg_deb or shutil.which("dpkg-deb")
    for program, found in (("apt-get", apt_get), ("dpkg-deb", dpkg_deb)):
        if not found or not os.access(found, os.X_OK):
            raise DataError(f"{program} is not available here, so moprune cannot fetch the Debian package "
                            f"{DEBIAN_PACKAGE}; instead, {_ways(apt=False)}")
    with tempfile.TemporaryDirectory(prefix="moprune-fashion-") as tmp:
        download = [apt_get, "-q", "-o", "APT::Sandbox::User=", "download", DEBIAN_PACKAGE]
        done = _run(download, cwd=tmp, what="apt-get download")
        if done.returncode != 0:
            # The system's package lists are empty or stale: update private ones (no root needed).
            lists = os.path.join(tmp, "lists")
            os.makedirs(os.path.join(lists, "partial"))
            os.makedirs(os.path.join(tmp, "archives", "partial"))
            private = ["-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={tmp}",
                       "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=", "-o", "Debug::NoLocking=1",
                       "-o", "APT::Sandbox::User="]
            _log.info("apt-get download failed (%s); updating private package lists",
                      done.stderr.strip().splitlines()[-1:] or done.returncode)
            update = _run([apt_get, "-q", *private, "update"], cwd=tmp, what="apt-get update")
            if update.returncode != 0:
                raise DataError(f"apt-get update (into private lists) failed with exit code {update.returncode}: "
                                f"{update.stderr.strip()[-500:]}; instead, {_ways(apt=False)}")
            done = _run([apt_get, "-q", *private, "download", DEBIAN_PACKAGE], cwd=tmp, what="apt-get download")
            if done.returncode != 0:
                raise DataError(f"apt-get download {DEBIAN_PACKAGE} failed with exit code {done.returncode}: "
                                f"{done.stderr.strip()[-500:]}; instead, {_ways(apt=False)}")
        debs = [f for f in os.listdir(tmp) if f.startswith(DEBIAN_PACKAGE + "_") and f.endswith(".deb")]
        if len(debs) != 1:
            raise DataError(f"apt-get download left {debs or 'no .deb file'} in {tmp}, expected one "
                            f"{DEBIAN_PACKAGE}_*.deb")
        extracted = os.path.join(tmp, "extracted")
        unpack = _run([dpkg_deb, "-x", os.path.join(tmp, debs[0]), extracted], cwd=tmp, what="dpkg-deb -x")
        if unpack.returncode != 0:
            raise DataError(f"dpkg-deb -x {debs[0]} failed with exit code {unpack.returncode}: "
                            f"{unpack.stderr.strip()[-500:]}")
        source = os.path.join(extracted, SYSTEM_FOLDER.lstrip("/"))
        verify_files(source)
        os.makedirs(target, exist_ok=True)
        for name in FASHION_MNIST_SHA256:
            with atomic_path(os.path.join(target, name)) as dest:
                shutil.copyfile(os.path.join(source, name), dest)
    verify_files(target)
    _log.info("fetched %s into %s", DEBIAN_PACKAGE, target)
    return target

