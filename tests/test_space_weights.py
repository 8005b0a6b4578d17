"""WeightSpace: magnitude ratios and per-weight masks; costs match the masked model."""

import copy

import numpy as np
import pytest
import thop
import torch
from torch import nn

from conftest import ZOO, randomized_zoo_model
from moprune.exceptions import MopruneValueError
from moprune.space import Plan, WeightSpace


def prunable(space, model):
    return [model.get_submodule(n).weight for n in space.layer_names]


def thop_counts(model):
    return thop.profile(model, inputs=(torch.zeros(1, *model.input_shape),), verbose=False)


def sparse_macs(model, space, dense):
    """MACs of the masked model (``dense``: thop's count) when multiplications by a zero weight are skipped."""
    total = 0
    uses = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: uses.__setitem__(n, o.numel() // (o.shape[-1] if isinstance(m, nn.Linear) else o.shape[1])))
        for n in space.layer_names]
    with torch.no_grad():
        model(torch.zeros(1, *model.input_shape))
    for h in handles:
        h.remove()
    for n in space.layer_names:
        total += int((model.get_submodule(n).weight == 0).sum()) * uses[n]
    return dense - total


@pytest.mark.parametrize("encoding", ["ratio", "mask"])
@pytest.mark.parametrize("name", ZOO)
def test_costs_match_the_masked_model(name, encoding):
    model = randomized_zoo_model(name)
    space = WeightSpace(model, encoding=encoding)
    rng = np.random.default_rng(0)
    X = rng.random((3, space.n_var))
    if encoding == "mask":
        X = X < rng.random((3, 1))
    cost = space.cost(X)
    for i, genome in enumerate(X):
        masked = space.materialize(genome)
        weights = prunable(space, masked)
        zeros = sum(int((w == 0).sum()) for w in weights)
        nonzero = sum(int((p != 0).sum()) for p in masked.parameters())
        bn_zero_bias = sum(int((p == 0).sum()) for n, p in masked.named_parameters() if not n.endswith("weight")
                           or n.rsplit(".", 1)[0] not in space.layer_names)
        assert cost["sparsity"][i] == zeros / space.n_weights
        assert cost["params"][i] == nonzero + bn_zero_bias  # biases that happen to be 0 still count
        dense = thop_counts(masked)[0]
        assert cost["dense_macs"][i] == dense == space.base_macs
        assert cost["macs"][i] == sparse_macs(masked, space, dense)
        for w_new, w_old in zip(weights, prunable(space, model)):
            kept = w_new != 0
            assert torch.equal(w_new[kept], w_old[kept])


def test_ratio_zeroes_smallest_magnitudes_first():
    model = randomized_zoo_model("lenet5")
    space = WeightSpace(model, encoding="ratio")
    assert space.n_var == 5 and space.layer_names == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert space.n_weights == 61_470
    x = np.array([1.0, 0.5, 0.25, 0.0, 0.9])
    masked = space.materialize(x)
    for name, keep in zip(space.layer_names, x):
        w_old = model.get_submodule(name).weight.detach().abs().flatten()
        w_new = masked.get_submodule(name).weight.detach().flatten()
        n_keep = int(np.ceil(keep * w_old.numel() - 1e-9))
        assert int((w_new != 0).sum()) == n_keep
        if 0 < n_keep < w_old.numel():
            assert w_old[w_new == 0].max() <= w_old[w_new != 0].min()
    plan = space.decode(x)
    assert plan.kind == "weights" and dict(plan.kept)["fc1"] == pytest.approx(0.75, abs=1e-4)
    assert torch.equal(space.materialize(plan).fc1.weight, masked.fc1.weight)
    ratios = np.linspace(0, 1, 6)
    macs = space.cost(np.repeat(ratios[:, None], 5, axis=1))["macs"]
    assert np.all(np.diff(macs) > 0) and macs[-1] == space.base_macs


def test_mask_layer_wise_mode():
    model = randomized_zoo_model("lenet5")
    space = WeightSpace(model, encoding="mask", layers=["conv2", model.fc1])
    assert space.group_names == ["conv2", "fc1"]
    assert space.n_var == 16 * 6 * 25 + 400 * 120 and space.vtype is bool
    sl = space.layer_slice("fc1")
    assert sl == slice(2400, 2400 + 48000)
    layer = np.zeros(48000, dtype=bool)
    layer[::2] = True
    x = space.embed("fc1", layer)
    assert x[: sl.start].all() and x[sl].sum() == 24000
    masked = space.materialize(x)
    assert torch.equal(masked.fc1.weight.flatten()[1::2], torch.zeros(24000))
    assert torch.equal(masked.conv2.weight, model.conv2.weight) and torch.equal(masked.fc2.weight, model.fc2.weight)
    assert space.cost(x)["sparsity"][0] == 24000 / space.n_var
    p1, p2 = space.decode(x), space.decode(space.original())
    assert isinstance(p1, Plan) and p1.key != p2.key and p1 == space.decode(x.copy())
    assert torch.equal(space.materialize(p1).fc1.weight, masked.fc1.weight)  # a plan alone rebuilds it
    with pytest.raises(MopruneValueError, match="fc3|one of"):
        space.layer_slice("fc3")


def test_base_untouched_and_bad_input():
    model = randomized_zoo_model("lenet5_caffe")
    before = copy.deepcopy(model.state_dict())
    space = WeightSpace(model, encoding="ratio")
    masked = space.materialize(np.zeros(space.n_var))
    for p in masked.parameters():
        p.data.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(MopruneValueError, match="length 4"):
        space.decode(np.ones(5))
    with pytest.raises(MopruneValueError, match=r"\[0, 1\]"):
        space.cost(np.full(4, -0.5))
    with pytest.raises(MopruneValueError, match="ratio.*mask"):
        WeightSpace(model, encoding="binary")
    with pytest.raises(MopruneValueError, match="layers"):
        WeightSpace(model, layers=["pool"])
    repaired = space.repair()._do(None, np.array([[1.5, -0.2, 0.5, 0.3]]))
    np.testing.assert_array_equal(repaired, [[1.0, 0.0, 0.5, 0.3]])
