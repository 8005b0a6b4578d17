"""ChannelSpace: pruned models equal the zeroed base model, analytic cost equals thop."""

import copy
import pickle

import numpy as np
import pytest
import thop
import torch
import torch_pruning as tp
from hypothesis import given, settings
from hypothesis import strategies as st
from pymoo.core.population import Population
from torch import nn
from torch.utils.data import TensorDataset

from conftest import ZOO, randomized_zoo_model
from moprune.exceptions import MopruneError, MopruneValueError
from moprune.space import ChannelSpace, Plan

_SPACES = {}


def space_for(name, **kwargs):
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _SPACES:
        model = randomized_zoo_model(name)
        _SPACES[key] = ChannelSpace(model, torch.zeros(1, *model.input_shape), **kwargs)
    return _SPACES[key]


def random_genomes(space, n, seed, p_keep=0.5):
    rng = np.random.default_rng(seed)
    if space.encoding == "binary":
        return rng.random((n, space.n_var)) < p_keep
    return rng.random((n, space.n_var))


def zeroed_base_output(space, plan, x):
    """Base model with every removed channel zeroed at the output of each layer of its group."""
    kept = dict(plan.kept)
    handles = []
    for group, size in zip(space.group_names, space.group_sizes):
        removed = torch.tensor(sorted(set(range(size)) - set(kept[group])), dtype=torch.long)
        for module_name, side in space.members[group]:
            if side != "out":
                continue
            module = space.model.get_submodule(module_name)

            def hook(m, inputs, out, removed=removed, size=size):
                assert out.shape[1] == size  # out-side members map channels one to one
                out = out.clone()
                out[:, removed] = 0
                return out

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return space.model(x)
    finally:
        for h in handles:
            h.remove()


def thop_counts(model, shape):
    macs, params = thop.profile(model, inputs=(torch.zeros(1, *shape),), verbose=False)
    return macs, params


@pytest.mark.parametrize("encoding", ["binary", "ratio"])
@pytest.mark.parametrize("name", ZOO)
def test_materialized_equals_zeroed_base_and_cost_equals_thop(name, encoding):
    space = space_for(name, encoding=encoding)
    x = torch.randn(3, *space.model.input_shape, generator=torch.Generator().manual_seed(1))
    X = random_genomes(space, 4, seed=2 * ZOO.index(name) + (encoding == "ratio"))
    X[0] = space.original()
    cost = space.cost(X)
    for i, genome in enumerate(X):
        plan = space.decode(genome)
        pruned = space.materialize(genome)
        assert not pruned.training
        with torch.no_grad():
            out = pruned(x)
        expected = zeroed_base_output(space, plan, x)
        assert torch.allclose(out, expected, atol=1e-5, rtol=0), (out - expected).abs().max()
        macs, params = thop_counts(pruned, space.model.input_shape)
        assert cost["macs"][i] == macs and cost["params"][i] == params
        kept = sum(len(k) for _, k in plan.kept)
        assert cost["sparsity"][i] == pytest.approx(1 - kept / sum(space.group_sizes))
    assert cost["macs"][0] == space.base_macs and cost["params"][0] == space.base_params
    assert cost["macs_ratio"][0] == 1.0 and cost["macs"][1:].max() < space.base_macs


def test_base_model_is_never_modified():
    space = space_for("resnet8")
    before = copy.deepcopy(space.model.state_dict())
    for genome in random_genomes(space, 3, seed=2):
        pruned = space.materialize(genome)
        for p in pruned.parameters():
            p.data.add_(1.0)  # a pruned copy must not share storage with the base
    after = space.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not space.model.training


def test_matches_torch_pruning_group_prune():
    space = space_for("resnet8")
    genome = random_genomes(space, 1, seed=3)[0]
    plan = space.decode(genome)
    ours = space.materialize(plan)
    theirs = copy.deepcopy(space.model)
    graph = tp.DependencyGraph().build_dependency(theirs, example_inputs=torch.zeros(1, 1, 28, 28))
    for group, kept in plan.kept:
        root = theirs.get_submodule(group)
        removed = sorted(set(range(root.out_channels)) - set(kept))
        if removed:
            graph.get_pruning_group(root, tp.prune_conv_out_channels, removed).prune()
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resnet8_coupled_channels_share_genes():
    space = space_for("resnet8")
    n_convs = sum(isinstance(m, nn.Conv2d) for m in space.model.modules())
    assert len(space.group_names) == 6 < n_convs == 9
    stem = dict(space.members)["stem.0"]
    outs = {m for m, side in stem if side == "out"}
    assert {"stem.0", "stem.1", "layer1.branch.3", "layer1.branch.4"} <= outs
    assert space.n_var == 16 + 16 + 32 + 32 + 64 + 64


def test_group_names_slices_and_classifier_not_pruned():
    space = space_for("mnist_cnn")
    assert space.group_names == ["conv1", "conv2", "fc1"]
    assert space.group_sizes == [32, 64, 1024] and space.n_var == 1120
    assert space.group_slices == [slice(0, 32), slice(32, 96), slice(96, 1120)]
    assert space.vtype is bool and space.xl.shape == space.xu.shape == (1120,)
    ratio = space_for("mnist_cnn", encoding="ratio")
    assert ratio.n_var == 3 and ratio.vtype is float and ratio.group_slices[2] == slice(2, 3)
    pruned = space.materialize(random_genomes(space, 1, seed=4)[0])
    assert pruned.fc2.out_features == 10


def test_layers_and_ignored_layers_restrict_the_genes():
    model = randomized_zoo_model("mnist_cnn")
    conv_only = ChannelSpace(model, layers=[model.conv1, model.conv2])
    assert conv_only.group_names == ["conv1", "conv2"] and conv_only.n_var == 96
    by_name = ChannelSpace(model, ignored_layers=["fc1"])
    assert by_name.group_names == ["conv1", "conv2"]
    genome = np.zeros(96, dtype=bool)
    genome[:5] = True
    genome[32:40] = True
    pruned = conv_only.materialize(genome)
    assert pruned.fc1.out_features == 1024 and pruned.fc1.in_features == 8 * 49
    assert conv_only.cost(genome)["macs"][0] == thop_counts(pruned, (1, 28, 28))[0]


def test_repair_of_all_zero_genome_keeps_most_important_channels():
    space = space_for("lenet5")
    zeros = np.zeros((2, space.n_var), dtype=bool)
    fixed = space.repair()._do(None, zeros)
    for name, sl in zip(space.group_names, space.group_slices):
        assert fixed[0, sl].sum() == 1
        assert np.flatnonzero(fixed[0, sl])[0] == np.argmax(space.importance_scores[name])
    plan = space.decode(zeros[0])  # decode repairs too: never an empty group
    assert all(len(k) == 1 for _, k in plan.kept)
    assert space.decode(fixed[0]) == plan
    pruned = space.materialize(zeros[0])
    assert pruned(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    three = ChannelSpace(space.model, min_channels=3)
    fixed3 = three.repair()._do(None, zeros)
    assert [fixed3[0, sl].sum() for sl in three.group_slices] == [3, 3, 3, 3]


def test_ratio_encoding_is_monotonic_and_respects_round_to():
    space = space_for("vgg_small", encoding="ratio")
    ratios = np.linspace(0.0, 1.0, 11)
    macs = space.cost(np.repeat(ratios[:, None], space.n_var, axis=1))["macs"]
    assert np.all(np.diff(macs) > 0)
    plan = space.decode(np.full(space.n_var, 0.3))
    sizes = dict(zip(space.group_names, space.group_sizes))
    assert all(len(k) == int(np.ceil(0.3 * sizes[n])) for n, k in plan.kept)
    top = np.argsort(-space.importance_scores["features.0"], kind="stable")[: len(dict(plan.kept)["features.0"])]
    assert sorted(top) == list(dict(plan.kept)["features.0"])
    rounded = space_for("vgg_small", encoding="ratio", round_to=8)
    plan8 = rounded.decode(np.full(space.n_var, 0.3))
    assert all(len(k) % 8 == 0 for _, k in plan8.kept)
    low = rounded.repair()._do(None, np.zeros((1, space.n_var)))
    np.testing.assert_allclose(low[0], 1 / np.asarray(space.group_sizes))
    assert rounded.decode(np.zeros(space.n_var)).summary["kept/features.0"] == 8


@pytest.mark.parametrize("importance", ["l1", "taylor", "taylor-dataset", "random"])
def test_importance_rankings(importance):
    model = randomized_zoo_model("lenet5")
    data = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    if importance == "taylor-dataset":
        importance, data = "taylor", TensorDataset(data, torch.arange(16) % 10)
    kwargs = {"importance_data": data} if importance == "taylor" else {"generator": 7}
    space = ChannelSpace(model, encoding="ratio", importance=importance, **kwargs)
    again = ChannelSpace(model, encoding="ratio", importance=importance, **kwargs)
    for name in space.group_names:
        s = space.importance_scores[name]
        assert s.shape == (dict(zip(space.group_names, space.group_sizes))[name],)
        assert np.all(s >= 0) and np.ptp(s) > 0
        np.testing.assert_array_equal(s, again.importance_scores[name])
    if importance == "l1":
        expected = model.conv1.weight.detach().abs().sum(dim=(1, 2, 3)).double().numpy()
        np.testing.assert_allclose(space.importance_scores["conv1"], expected)


def test_plan_round_trip_and_key():
    space = space_for("lenet5")
    a, b = random_genomes(space, 2, seed=5)
    pa = space.decode(a)
    assert isinstance(pa, Plan) and pa.kind == "channels"
    assert pa == space.decode(a.copy()) and pa.key == space.decode(a.astype(float)).key
    assert pa.key != space.decode(b).key
    assert pa.summary["kept/conv1"] == len(dict(pa.kept)["conv1"])
    sd1, sd2 = space.materialize(pa).state_dict(), space.materialize(a).state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    clone = pickle.loads(pickle.dumps(space))  # e.g. shipped to a worker process
    assert clone.decode(a) == pa and clone.cost(a)["macs"][0] == space.cost(a)["macs"][0]


def test_bad_genomes_and_arguments():
    space = space_for("lenet5")
    with pytest.raises(MopruneValueError, match=f"length {space.n_var}"):
        space.decode(np.ones(space.n_var + 1, dtype=bool))
    with pytest.raises(MopruneValueError, match=r"\(n x 226\)|length 226"):
        space.cost(np.ones((3, 5)))
    with pytest.raises(MopruneValueError, match="0/1"):
        space.decode(np.full(space.n_var, 0.5))
    with pytest.raises(MopruneValueError, match="numeric"):
        space.materialize(np.array(["a"] * space.n_var))
    ratio = space_for("lenet5", encoding="ratio")
    with pytest.raises(MopruneValueError, match=r"\[0, 1\]"):
        ratio.decode(np.full(ratio.n_var, 1.5))
    model = space.model
    with pytest.raises(MopruneValueError, match="binary.*ratio"):
        ChannelSpace(model, encoding="bits")
    with pytest.raises(MopruneValueError, match="l1.*taylor.*random"):
        ChannelSpace(model, importance="l2")
    with pytest.raises(MopruneValueError, match="importance_data"):
        ChannelSpace(model, importance="taylor")
    with pytest.raises(MopruneValueError, match="min_channels"):
        ChannelSpace(model, min_channels=0)
    with pytest.raises(MopruneValueError, match="ignored_layers"):
        ChannelSpace(model, ignored_layers=["nope"])
    with pytest.raises(MopruneValueError, match="layers"):
        ChannelSpace(model, layers=[model.fc3])  # the classifier is never prunable


class _Detached(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        x = torch.from_numpy(self.conv1(x).detach().numpy())
        return self.fc(self.conv2(x).flatten(1))


class _Broken(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        return self.fc(self.conv1(x).flatten(1))


def test_untraceable_models_raise_naming_the_module():
    with pytest.raises(MopruneError, match="conv1.*ignored_layers"):
        ChannelSpace(_Detached())
    with pytest.raises(MopruneError, match="fc.*ignored_layers"):
        ChannelSpace(_Broken())
    space = ChannelSpace(_Detached(), ignored_layers=["conv1"])
    assert space.group_names == ["conv2"]


class _Depthwise(nn.Module):
    """conv -> BN -> depthwise conv -> BN -> pointwise conv, with a concatenation."""

    input_shape = (2, 10, 10)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(2, 4, 1)
        self.pw = nn.Conv2d(12, 6, 1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.fc = nn.Linear(6 * 9, 3)

    def forward(self, x):
        y = torch.relu(self.bn2(self.dw(torch.relu(self.bn(self.conv(x))))))
        y = self.pw(torch.cat([y, self.side(x)], dim=1))
        return self.fc(self.pool(y).flatten(1))


def test_depthwise_concat_and_adaptive_pool():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _Depthwise().eval()
    with torch.no_grad():
        for bn in (model.bn, model.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 1.5)
    space = ChannelSpace(model)
    assert space.group_names == ["conv", "side", "pw"]
    x = torch.randn(2, 2, 10, 10, generator=torch.Generator().manual_seed(0))
    X = random_genomes(space, 5, seed=6)
    cost = space.cost(X)
    for i, genome in enumerate(X):
        pruned = space.materialize(genome)
        assert pruned.dw.groups == pruned.dw.out_channels == pruned.bn2.num_features
        expected = zeroed_base_output(space, space.decode(genome), x)
        assert torch.allclose(pruned(x), expected, atol=1e-5, rtol=0)
        assert (cost["macs"][i], cost["params"][i]) == thop_counts(pruned, (2, 10, 10))


@settings(max_examples=25, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=226, max_size=226), min_channels=st.integers(1, 8))
def test_repair_property(bits, min_channels):
    space = space_for("lenet5") if min_channels == 1 else space_for("lenet5", min_channels=min_channels)
    x = np.array(bits)
    fixed = space.repair()._do(None, x[None, :])[0]
    for sl, size in zip(space.group_slices, space.group_sizes):
        assert fixed[sl].sum() >= min(min_channels, size)
    assert np.all(fixed >= x)  # only switches channels on
    np.testing.assert_array_equal(space.repair()._do(None, fixed[None, :])[0], fixed)
    assert space.decode(x) == space.decode(fixed)
    assert space.cost(x)["macs"][0] == space.cost(fixed)["macs"][0]


def test_repair_inside_pymoo_population_and_pickles_small():
    space = space_for("lenet5")
    pop = Population.new("X", np.zeros((3, space.n_var), dtype=bool))
    pop = space.repair().do(None, pop)
    assert all(pop.get("X")[:, sl].sum(axis=1).min() == 1 for sl in space.group_slices)
    assert len(pickle.dumps(space.repair())) < 20_000
