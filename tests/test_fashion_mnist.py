"""Fashion-MNIST: lookup order, checksums, the missing-data error, fetching without root, splits, baselines."""

import gzip
import os
import shutil
import stat
import subprocess
import warnings

import numpy as np
import pytest
import torch

import moprune
from moprune.cli import main
from moprune.data import Splits
from moprune.data import fashion as fashion_module
from moprune.data.augment import augment_batch
from moprune.data.fashion import (
    FASHION_MNIST_SHA256,
    fetch_fashion_mnist,
    load_fashion_mnist,
    raw_folder,
    verify_files,
)
from moprune.exceptions import DataError, MopruneValueError
from moprune.models import baseline_recipe, pretrained
from moprune.models import baselines as baselines_module
from moprune.train import fit

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def write_idx_gz(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory):
    """Four full-size IDX files that are not Debian's: images encode their index, labels cycle 0-9."""
    folder = tmp_path_factory.mktemp("fake-fashion")
    train_x = np.zeros((60_000, 28, 28), dtype=np.uint8)
    train_x[:, 0, 0] = np.arange(60_000) % 251  # first pixel: which image this is
    train_x[:, 0, 1] = np.arange(60_000) // 251
    test_x = np.full((10_000, 28, 28), 255, dtype=np.uint8)
    write_idx_gz(folder / FILES[0], train_x)
    write_idx_gz(folder / FILES[1], np.arange(60_000) % 10)
    write_idx_gz(folder / FILES[2], test_x)
    write_idx_gz(folder / FILES[3], (np.arange(10_000) * 3) % 10)
    return folder


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    """Pretend the Debian package is not installed (whatever this machine has)."""
    monkeypatch.setattr(fashion_module, "SYSTEM_FOLDER", str(tmp_path / "not-installed"))


def load_quietly(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_fashion_mnist(**kwargs)


# ----------------------------------------------------------------------------- loading
def test_user_folder_gives_50k_10k_10k_with_the_last_train_images_as_validation(fake_folder, tmp_path,
                                                                                 no_system_copy):
    with pytest.warns(UserWarning, match="not the Debian package's.*shape and label range"):
        splits = load_fashion_mnist(folder=fake_folder, cache=str(tmp_path))
    assert isinstance(splits, Splits)
    assert [len(s) for s in splits] == [50_000, 10_000, 10_000]
    for part in splits:
        x, y = part.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28) and y.dtype == torch.int64
        assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    index = (splits.train.tensors[0][:, 0, 0, 0] * 255).round().long() + 251 * (
        splits.train.tensors[0][:, 0, 0, 1] * 255).round().long()
    assert torch.equal(index, torch.arange(50_000))  # the first 50,000 images, in order
    val_index = (splits.val.tensors[0][:, 0, 0, 0] * 255).round().long() + 251 * (
        splits.val.tensors[0][:, 0, 0, 1] * 255).round().long()
    assert torch.equal(val_index, torch.arange(50_000, 60_000))  # the last 10,000 are validation
    assert torch.equal(splits.val.tensors[1], torch.arange(50_000, 60_000) % 10)
    assert torch.equal(splits.test.tensors[1], (torch.arange(10_000) * 3) % 10)
    assert splits.test.tensors[0].min().item() == 1.0
    assert os.path.isfile(tmp_path / "fashion-mnist.npz")


def test_cache_comes_first_and_is_read_without_any_source(fake_folder, tmp_path, no_system_copy):
    first = load_quietly(folder=fake_folder, cache=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no source is read again, so no warning either
        again = load_fashion_mnist(cache=str(tmp_path), folder=str(tmp_path / "does-not-exist"))
    for a, b in zip(first, again):
        assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])


def test_missing_data_names_every_way_to_get_it(tmp_path, no_system_copy):
    with pytest.raises(DataError) as info:
        load_fashion_mnist(cache=str(tmp_path))
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "moprune data fetch fashion-mnist" in message
    assert "folder=" in message and "--data fashion-mnist:FOLDER" in message
    assert not os.path.exists(tmp_path / "fashion-mnist.npz")


def test_checksum_mismatch_names_the_file_and_both_digests(fake_folder, tmp_path, monkeypatch):
    system = tmp_path / "system"
    shutil.copytree(fake_folder, system)
    monkeypatch.setattr(fashion_module, "SYSTEM_FOLDER", str(system))
    with pytest.raises(DataError) as info:
        load_fashion_mnist(cache=str(tmp_path / "cache"))
    message = str(info.value)
    first = os.path.join(str(system), FILES[0])
    assert f"checksum mismatch for {first}" in message
    assert FASHION_MNIST_SHA256[FILES[0]] in message
    assert fashion_module.sha256(first) in message
    assert not os.path.exists(tmp_path / "cache" / "fashion-mnist.npz")


def test_a_tampered_fetched_file_is_refused(fake_folder, tmp_path, no_system_copy):
    fetched = raw_folder(str(tmp_path))
    shutil.copytree(fake_folder, fetched)
    with pytest.raises(DataError, match=r"checksum mismatch for .*train-images-idx3-ubyte\.gz: expected SHA-256 "
                                        + FASHION_MNIST_SHA256[FILES[0]]):
        load_fashion_mnist(cache=str(tmp_path), folder=fake_folder)  # the cache's copy comes before folder=


def test_malformed_user_folder_names_the_file(fake_folder, tmp_path, no_system_copy):
    folder = tmp_path / "bad"
    shutil.copytree(fake_folder, folder)
    write_idx_gz(folder / FILES[1], np.full(60_000, 10))  # label 10 does not exist
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: labels range over \[10, 10\]"):
        load_quietly(folder=folder, cache=str(tmp_path / "cache"))
    write_idx_gz(folder / FILES[1], np.zeros(59_999))
    with pytest.raises(DataError, match=r"labels of shape \(59999,\), expected \(60000,\)"):
        load_quietly(folder=folder, cache=str(tmp_path / "cache"))
    os.remove(folder / FILES[3])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz not found"):
        load_quietly(folder=folder, cache=str(tmp_path / "cache"))


def test_corrupt_cache_names_the_file(tmp_path):
    (tmp_path / "fashion-mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cached Fashion-MNIST file .*fashion-mnist.npz is corrupt"):
        load_fashion_mnist(cache=str(tmp_path))


# ----------------------------------------------------------------------------- fetching
def test_fetch_without_apt_get_says_so_and_names_the_other_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_module.shutil, "which", lambda name: None)
    with pytest.raises(DataError) as info:
        fetch_fashion_mnist(cache=str(tmp_path))
    message = str(info.value)
    assert message.startswith("apt-get is not available here")
    assert "--data fashion-mnist:FOLDER" in message and "dataset-fashion-mnist" in message
    assert not os.path.exists(raw_folder(str(tmp_path)))


def test_cli_fetch_without_apt_get_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(fashion_module.shutil, "which", lambda name: None)
    assert main(["data", "fetch", "fashion-mnist"]) == 2
    assert "apt-get is not available here" in capsys.readouterr().err


def _fake_apt(tmp_path, deb):
    """An ``apt-get`` that records its arguments and 'downloads' ``deb`` into its working directory."""
    script = tmp_path / "apt-get"
    log = tmp_path / "apt-get.log"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\ncase \"$*\" in *download*) cp {deb} . ;; esac\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is missing: cannot build a test package")
def test_fetch_refuses_a_package_whose_files_differ_and_leaves_the_cache_empty(fake_folder, tmp_path):
    root = tmp_path / "pkg"
    data = root / "usr" / "share" / "datasets" / "fashion-mnist"
    shutil.copytree(fake_folder, data)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text("Package: dataset-fashion-mnist\nVersion: 1\nArchitecture: all\n"
                                              "Maintainer: test <t@example.org>\nDescription: fake\n")
    deb = tmp_path / "dataset-fashion-mnist_1_all.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "-z1", "--build", str(root), str(deb)], check=True, capture_output=True)
    apt_get, log = _fake_apt(tmp_path, deb)
    with pytest.raises(DataError, match=r"checksum mismatch for .*train-images-idx3-ubyte\.gz"):
        fetch_fashion_mnist(cache=str(tmp_path / "cache"), apt_get=apt_get)
    assert "download dataset-fashion-mnist" in log.read_text()
    assert not os.path.exists(raw_folder(str(tmp_path / "cache"))) or not os.listdir(raw_folder(str(tmp_path / "cache")))


def test_fetch_updates_private_lists_when_download_fails_first(tmp_path):
    script = tmp_path / "apt-get"
    log = tmp_path / "apt-get.log"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexit 100\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(DataError, match="apt-get update .*failed with exit code 100"):
        fetch_fashion_mnist(cache=str(tmp_path / "cache"), apt_get=str(script), dpkg_deb=shutil.which("true"))
    calls = log.read_text().splitlines()
    assert calls[0].endswith("download dataset-fashion-mnist") and "Dir::State::Lists" not in calls[0]
    assert calls[1].endswith(" update") and "Dir::State::Lists=" in calls[1]  # private lists: no root


# ----------------------------------------------------------------------------- augmentation and baselines
def test_augment_batch_flips_and_shifts_without_changing_content():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28)
    flipped = augment_batch(x, "flip", generator=g)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54
    x = torch.zeros(200, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0  # a centred square: shifts of at most 2 pixels keep it whole
    shifted = augment_batch(x, "flip+crop", generator=torch.Generator().manual_seed(1))
    assert shifted.shape == x.shape and torch.equal(shifted.sum((1, 2, 3)), x.sum((1, 2, 3)))
    rows = shifted[:, 0].sum(2).argmax(1)
    assert set(rows.tolist()) == {8, 9, 10, 11, 12}  # the square's top row moved by -2..+2
    again = augment_batch(x, "flip+crop", generator=torch.Generator().manual_seed(1))
    assert torch.equal(shifted, again)
    with pytest.raises(MopruneValueError, match="augment"):
        augment_batch(x, "rotate")
    with pytest.raises(MopruneValueError, match="augment"):
        fit(torch.nn.Linear(1, 1), torch.utils.data.TensorDataset(torch.zeros(2, 1), torch.zeros(2).long()),
            augment="rotate", progress=False)


def test_fashion_recipes_augment_and_mnist_keeps_its_recipe():
    assert baseline_recipe("mnist_cnn") == moprune.models.DEFAULT_RECIPE
    for name in ("mnist_cnn", "lenet5_caffe", "vgg_small", "resnet8"):
        recipe = baseline_recipe(name, "fashion-mnist")
        assert recipe["augment"] == "flip+crop" and set(recipe) == {*moprune.models.DEFAULT_RECIPE, "augment"}
    with pytest.raises(MopruneValueError, match="data must be one of"):
        baseline_recipe("mnist_cnn", "cifar100")


def _tiny(seed):
    g = torch.Generator().manual_seed(seed)
    part = torch.utils.data.TensorDataset(torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
    return Splits(part, part, part)


def test_pretrained_caches_a_separate_baseline_per_data_set(tmp_path, monkeypatch):
    loaded = []

    def fake_load(data, *, cache=None):
        loaded.append(data)
        return _tiny(0 if data == "mnist" else 1)

    monkeypatch.setattr(baselines_module, "load_data_set", fake_load)
    mnist = pretrained("lenet5", data="mnist", cache=str(tmp_path), epochs=1, progress=False)
    fashion = pretrained("lenet5", data="fashion-mnist", cache=str(tmp_path), epochs=1, progress=False)
    files = sorted(f for f in os.listdir(tmp_path / "weights") if f.endswith(".pt"))
    assert len(files) == 2 and loaded == ["mnist", "fashion-mnist"]
    assert any(not torch.equal(a, b) for a, b in zip(mnist.state_dict().values(), fashion.state_dict().values()))
    again = pretrained("lenet5", data="fashion-mnist", cache=str(tmp_path), epochs=1, progress=False)
    assert len([f for f in os.listdir(tmp_path / "weights") if f.endswith(".pt")]) == 2  # loaded, not retrained
    assert all(torch.equal(a, b) for a, b in zip(fashion.state_dict().values(), again.state_dict().values()))
    with pytest.raises(MopruneValueError, match="data must be one of"):
        pretrained("lenet5", data="fashion", cache=str(tmp_path))


def test_cli_data_option_lists_fashion_mnist(capsys, tmp_path):
    assert main(["train", "lenet5", "--data", "fashion"]) == 2
    assert "fashion-mnist, fashion-mnist:FOLDER" in capsys.readouterr().err
    assert main(["search", "--data", "fashion-mnist:/does/not/exist", "--out", str(tmp_path / "run")]) == 2
    assert "fashion-mnist:FOLDER with an existing folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the real data
@pytest.fixture(scope="module")
def real_fashion():
    """The real data set, fetched into $MOPRUNE_CACHE when needed (``make test`` fetches it first)."""
    try:
        return load_fashion_mnist()
    except DataError:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            pytest.skip("apt-get/dpkg-deb missing: cannot fetch the Debian package dataset-fashion-mnist, so the "
                        "tests on the real Fashion-MNIST data are skipped")
        fetch_fashion_mnist()
        return load_fashion_mnist()


@pytest.mark.slow
def test_real_fashion_mnist_is_verified_and_balanced(real_fashion):
    verify_files(raw_folder()) if os.path.isdir(raw_folder()) else verify_files(fashion_module.SYSTEM_FOLDER)
    assert [len(s) for s in real_fashion] == [50_000, 10_000, 10_000]
    assert torch.equal(torch.bincount(real_fashion.test.tensors[1]), torch.full((10,), 1000))
    train_and_val = torch.cat([real_fashion.train.tensors[1], real_fashion.val.tensors[1]])
    assert torch.equal(torch.bincount(train_and_val), torch.full((10,), 6000))
    x = real_fashion.train.tensors[0]
    assert x.dtype == torch.float32 and x.min().item() == 0.0 and x.max().item() == 1.0
    assert 0.25 < x.mean().item() < 0.32  # Fashion-MNIST's mean pixel is 0.286 (MNIST's is 0.13)


@pytest.mark.slow
def test_fetch_is_idempotent_and_fast_when_present(real_fashion):
    import time

    start = time.perf_counter()
    folder = fetch_fashion_mnist()
    assert time.perf_counter() - start < 5.0
    assert sorted(os.listdir(folder)) == sorted(FASHION_MNIST_SHA256)


@pytest.mark.slow
def test_a_small_model_learns_real_fashion_mnist(real_fashion):
    from moprune.data import subset
    from moprune.models import get_model
    from moprune.train import evaluate

    torch.manual_seed(0)
    model = get_model("lenet5_caffe")
    fit(model, subset(real_fashion.train, 5000), epochs=4, lr=0.05, augment="flip",
        generator=torch.Generator().manual_seed(0), progress=False)
    accuracy = evaluate(model, subset(real_fashion.test, 2000))
    print(f"lenet5_caffe, 4 epochs on 5,000 images: {100 * accuracy:.1f}% on 2,000 test images")
    assert accuracy > 0.75  # chance is 0.10; 79.8% when written


def test_cli_search_and_report_on_a_fashion_mnist_folder(fake_folder, tmp_path, monkeypatch, capsys,
                                                         no_system_copy):
    import json

    from moprune.models import get_model

    monkeypatch.setenv("MOPRUNE_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "lenet5.pt"
    torch.save(get_model("lenet5").state_dict(), weights)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        code = main(["search", "--model", "lenet5", "--weights", str(weights), "--data",
                     f"fashion-mnist:{fake_folder}", "--val-samples", "50", "--pop-size", "4", "--generations", "1",
                     "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["data"] == f"fashion-mnist:{fake_folder}"
    assert os.path.isfile(tmp_path / "cache" / "fashion-mnist.npz")
    capsys.readouterr()
    assert main(["report", str(out)]) == 0  # read back from the cache, no warning needed
    assert "front" in capsys.readouterr().out.lower()


def test_a_fashion_mnist_run_trains_its_baseline_with_the_fashion_recipe(monkeypatch):
    from moprune.cli import config as cfg

    calls = []
    monkeypatch.setattr("moprune.models.pretrained", lambda name, **kw: calls.append((name, kw)) or "model")
    settings = {"model": "resnet8", "weights": None, "baseline_epochs": None}
    cfg.load_model({**settings, "data": "fashion-mnist"}, "DATA")
    cfg.load_model({**settings, "data": "fashion-mnist:/some/folder", "baseline_epochs": 3}, "DATA")
    cfg.load_model({**settings, "data": "mnist"}, "DATA")
    recipes = [{k: v for k, v in kw.items() if k not in ("data", "progress")} for _, kw in calls]
    assert recipes[0] == baseline_recipe("resnet8", "fashion-mnist")
    assert recipes[1] == {**baseline_recipe("resnet8", "fashion-mnist"), "epochs": 3}
    assert recipes[2] == moprune.models.DEFAULT_RECIPE
