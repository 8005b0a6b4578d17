"""moprune.exporting and moprune.retraining on small channel-pruned models built by hand."""

import copy
import importlib.util
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.utils.prune
from torch import nn
from torch.utils.data import TensorDataset

from moprune.data import Splits
from moprune.exceptions import DataError, MopruneError, MopruneValueError
from moprune.exporting import describe, export, export_onnx, load, load_meta
from moprune.models import get_model
from moprune.retraining import RetrainResult, retrain

# ------------------------------------------------------------------------- hand-made pruning


def slice_conv(conv, out_idx=None, in_idx=None):
    out_idx = torch.arange(conv.out_channels) if out_idx is None else torch.as_tensor(out_idx)
    in_idx = torch.arange(conv.in_channels) if in_idx is None else torch.as_tensor(in_idx)
    new = nn.Conv2d(len(in_idx), len(out_idx), conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight[out_idx][:, in_idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[out_idx])
    return new


def slice_bn(bn, idx):
    idx = torch.as_tensor(idx)
    new = nn.BatchNorm2d(len(idx))
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, name).copy_(getattr(bn, name)[idx])
    return new


def slice_linear(fc, out_idx=None, in_idx=None):
    out_idx = torch.arange(fc.out_features) if out_idx is None else torch.as_tensor(out_idx)
    in_idx = torch.arange(fc.in_features) if in_idx is None else torch.as_tensor(in_idx)
    new = nn.Linear(len(in_idx), len(out_idx))
    with torch.no_grad():
        new.weight.copy_(fc.weight[out_idx][:, in_idx])
        new.bias.copy_(fc.bias[out_idx])
    return new


def pruned_mnist_cnn(seed=0):
    """mnist_cnn with conv1 32 -> 12, conv2 64 -> 20, fc1 1024 -> 100 channels."""
    with torch.random.fork_rng():  # leave the global RNG of other tests alone
        torch.manual_seed(seed)
        model = get_model("mnist_cnn")
    keep1, keep2, keep_fc = torch.arange(0, 32, 2)[:12], torch.arange(0, 64, 3)[:20], torch.arange(0, 1024, 10)[:100]
    model.conv1 = slice_conv(model.conv1, keep1)
    model.conv2 = slice_conv(model.conv2, keep2, keep1)
    flat = (keep2[:, None] * 49 + torch.arange(49)[None, :]).reshape(-1)  # flatten keeps 7x7 per channel
    model.fc1 = slice_linear(model.fc1, keep_fc, flat)
    model.fc2 = slice_linear(model.fc2, None, keep_fc)
    return model.eval()


def pruned_resnet8(seed=0):
    """resnet8 with the inner channels of every block cut (16 -> 6, 32 -> 10, 64 -> 20)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = get_model("resnet8")
    g = torch.Generator().manual_seed(seed)
    for block, keep in ((model.layer1, 6), (model.layer2, 10), (model.layer3, 20)):
        idx = torch.arange(keep) * 2 + 1
        b = block.branch
        b[0] = slice_conv(b[0], out_idx=idx)
        b[1] = slice_bn(b[1], idx)
        b[3] = slice_conv(b[3], in_idx=idx)
    with torch.no_grad():  # non-trivial BN statistics, so that a lost buffer would show
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a busy 2-core machine two threads make small models 10-30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


X = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------ export

@pytest.mark.parametrize("builder", [pruned_mnist_cnn, pruned_resnet8])
def test_reloaded_export_gives_identical_outputs(tmp_path, builder):
    model = builder()
    path = tmp_path / "pruned.pt"
    assert export(model, path, meta={"accuracy": 0.98, "macs_ratio": 0.3, "pick": "knee"}) == path
    loaded = load(path)
    assert type(loaded) is type(model) and not loaded.training
    assert torch.equal(loaded(X), model(X))
    assert describe(loaded) == describe(model)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    meta = load_meta(path)
    assert meta["accuracy"] == 0.98 and meta["pick"] == "knee" and meta["torch_version"] == torch.__version__
    # the file is plain data: weights_only loading works without moprune's help
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "moprune-export" and raw["factory"] in ("mnist_cnn", "resnet8")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


@pytest.mark.parametrize("name", ["lenet5_caffe", "vgg_small", "resnet8"])
@pytest.mark.parametrize("space_class", ["LowRankSpace", "LowRankChannelSpace"])
def test_low_rank_factorised_models_export_and_load(tmp_path, name, space_class):
    import moprune

    model = get_model(name).eval()
    space = getattr(moprune, space_class)(model)
    genome = np.random.default_rng(0).integers(space.xl, space.xu + 1)
    factorised = space.materialize(genome)
    assert any(type(m) is nn.Sequential for _, m in factorised.named_modules()
               if _ and type(dict(model.named_modules()).get(_)) is not nn.Sequential)  # a layer was factorised
    export(factorised, tmp_path / "f.pt")
    loaded = load(tmp_path / "f.pt")
    assert describe(loaded) == describe(factorised)
    x = torch.rand(2, *model.input_shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loaded(x), factorised(x), atol=1e-6)


def test_pruned_mnist_cnn_shapes_are_recorded(tmp_path):
    export(pruned_mnist_cnn(), tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt")
    assert (loaded.conv1.out_channels, loaded.conv2.in_channels, loaded.conv2.out_channels) == (12, 12, 20)
    assert (loaded.fc1.in_features, loaded.fc1.out_features, loaded.fc2.in_features) == (980, 100, 100)


def test_torch_prune_masks_are_folded_in(tmp_path):
    model = get_model("lenet5").eval()
    torch.nn.utils.prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    export(model, tmp_path / "masked.pt")
    loaded = load(tmp_path / "masked.pt")
    assert torch.equal(loaded(X), model(X))
    assert float((loaded.fc1.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_non_zoo_models_need_a_template(tmp_path):
    def make():
        return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                             nn.Linear(8 * 26 * 26, 10))

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = make().eval()
    model[0] = slice_conv(model[0], [0, 2, 5])
    model[1] = slice_bn(model[1], [0, 2, 5])
    model[4] = slice_linear(model[4], None, torch.cat([torch.arange(c * 676, (c + 1) * 676) for c in (0, 2, 5)]))
    model.eval()
    export(model, tmp_path / "seq.pt")
    with pytest.raises(MopruneValueError, match="outside the zoo.*pass model="):
        load(tmp_path / "seq.pt")
    template = make()
    loaded = load(tmp_path / "seq.pt", model=template)
    assert torch.equal(loaded(X), model(X))
    assert template[0].out_channels == 8  # the template is untouched


def test_corrupt_and_foreign_files_give_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    export(pruned_mnist_cnn(), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.pt is not a readable moprune export"):
        load(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all" * 10)
    with pytest.raises(DataError, match="not a readable moprune export"):
        load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(DataError, match="is not a moprune export"):
        load(foreign)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.pt")


def test_export_validates_arguments(tmp_path):
    with pytest.raises(MopruneValueError, match="model must be a torch.nn.Module"):
        export("model", tmp_path / "x.pt")
    with pytest.raises(MopruneValueError, match=r"meta\['f'\] must be made of dicts"):
        export(pruned_mnist_cnn(), tmp_path / "x.pt", meta={"f": object()})
    assert not (tmp_path / "x.pt").exists()


def test_export_onnx_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = pruned_resnet8()
    path = export_onnx(model, tmp_path / "pruned.onnx", torch.zeros(1, 1, 28, 28))
    assert os.path.getsize(path) > 10_000
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": X.numpy()})  # batch 8, exported with batch 1
    np.testing.assert_allclose(out, model(X).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_export_onnx_without_onnx_names_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(MopruneError, match=r"pip install moprune\[onnx\]"):
        export_onnx(pruned_mnist_cnn(), tmp_path / "m.onnx", torch.zeros(1, 1, 28, 28))


# ----------------------------------------------------------------------------------- retrain

def tiny_splits(n_train=1024, n_eval=256, seed=0):
    """A learnable toy task: the class is the brightest of 10 horizontal bands of the image."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.rand(n, 1, 28, 28, generator=g) * 0.3
        for i, y in enumerate(labels.tolist()):
            images[i, 0, 2 * y + 4: 2 * y + 6, :] += 0.7
        return TensorDataset(images, labels)

    return Splits(make(n_train), make(n_eval), make(n_eval))


def trained_lenet5(data, *, epochs):
    """LeNet-5 (seeded) trained ``epochs`` on ``data.train`` (a :func:`tiny_splits`), in eval mode."""
    from moprune.train import fit

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = get_model("lenet5")
    fit(model, data.train, epochs=epochs, batch_size=64, generator=torch.Generator().manual_seed(0), progress=False)
    return model.eval()


class FakeSpace:
    """The only part of the Space interface retrain uses: ``materialize(genome)``."""

    def __init__(self):
        self.calls = []

    def materialize(self, genome):
        self.calls.append(np.asarray(genome).copy())
        return pruned_mnist_cnn(seed=int(np.asarray(genome).sum()))


@pytest.mark.slow
def test_retrain_trains_reports_and_is_deterministic():
    data = tiny_splits()
    model = pruned_mnist_cnn()
    before = [p.clone() for p in model.parameters()]
    kwargs = dict(data=data, base_model=get_model("mnist_cnn"), epochs=2, lr=0.05, batch_size=32, seed=3)
    a = retrain(model, **kwargs)
    b = retrain(model, **kwargs)
    assert isinstance(a, RetrainResult)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))  # the input is untouched
    assert a.test_accuracy == b.test_accuracy and a.val_accuracy == b.val_accuracy
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert a.test_accuracy > 0.9 and a.val_accuracy > 0.9, (a.test_accuracy, a.val_accuracy)  # chance: 0.1
    assert a.base_test_accuracy < 0.3  # the untrained base model is near chance
    assert a.base_macs == 13_883_904 and a.base_params == 3_274_634
    # conv1 12x1x25x784 + conv2 20x12x25x196 + fc1 980x100 + fc2 100x10 (+ thop's bias terms)
    assert a.macs == pytest.approx(12 * 25 * 784 + 20 * 12 * 25 * 196 + 980 * 100 + 100 * 10, rel=0.01)
    assert a.macs_ratio == pytest.approx(a.macs / a.base_macs)
    assert a.params == sum(p.numel() for p in model.parameters())
    assert not np.isnan(a.base_test_accuracy) and 0 <= a.base_test_accuracy <= 1


@pytest.mark.slow
def test_retrain_from_space_and_genome_with_distillation():
    data = tiny_splits(n_train=256, n_eval=64)
    space = FakeSpace()
    genome = np.array([1, 0, 1])
    base = get_model("mnist_cnn").eval()
    plain = retrain((space, genome), data=data, epochs=1, batch_size=64, seed=0)
    distilled = retrain((space, genome), data=data, base_model=base, distill_weight=0.5, epochs=1,
                        batch_size=64, seed=0)
    assert np.isnan(plain.macs_ratio) and distilled.macs_ratio == pytest.approx(distilled.macs / 13_883_904)
    from_row = retrain((space, pd.Series({"genome": genome, "accuracy": 0.9})), data=data, epochs=1,
                       batch_size=64, seed=0)
    assert len(space.calls) == 3 and all(np.array_equal(c, genome) for c in space.calls)
    assert all(torch.equal(p, q) for p, q in zip(plain.model.parameters(), from_row.model.parameters()))
    assert plain.distill_weight == 0.0 and distilled.distill_weight == 0.5
    # same start, same batches: only the distillation term differs
    assert not all(torch.equal(p, q) for p, q in zip(plain.model.parameters(), distilled.model.parameters()))


@pytest.mark.slow
def test_retrain_keeps_unstructured_zeros_and_counts_sparse_macs():
    data = tiny_splits(n_train=512)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = get_model("lenet5").eval()
    model = copy.deepcopy(base)
    with torch.no_grad():
        model.fc1.weight[:, ::2] = 0.0  # half of fc1's 400 x 120 weights
    out = retrain(model, data=data, base_model=base, epochs=1, batch_size=64, seed=0)
    assert int((out.model.fc1.weight == 0).sum()) == 120 * 200
    assert not hasattr(out.model.fc1, "weight_orig")  # the training mask is folded back in
    assert out.dense_macs == out.base_macs and out.dense_params == out.base_params
    assert out.base_macs - out.macs == 120 * 200 and out.base_params - out.params == 120 * 200
    regrown = retrain(model, data=data, epochs=1, batch_size=64, seed=0, keep_zeros=False)
    # without the mask the zeroed weights get gradients (some inputs are dead after ReLU: not all)
    assert int((regrown.model.fc1.weight == 0).sum()) < 120 * 200 * 0.8


def test_retrain_validates():
    data = tiny_splits(n_train=32, n_eval=16)
    with pytest.raises(MopruneValueError, match="distill_weight > 0 needs base_model"):
        retrain(pruned_mnist_cnn(), data=data, distill_weight=0.5)
    with pytest.raises(MopruneValueError, match="candidate must be"):
        retrain("model", data=data)
    with pytest.raises(MopruneValueError, match="data must be a moprune Splits"):
        retrain(pruned_mnist_cnn(), data=(1, 2))
    with pytest.raises(MopruneValueError, match="seed must be"):
        retrain(pruned_mnist_cnn(), data=data, seed=-1)
