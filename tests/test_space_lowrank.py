"""LowRankSpace and LowRankChannelSpace: exact costs, faithful factorisations, integer genomes."""

import numpy as np
import pytest
import thop
import torch
from torch import nn

from conftest import ZOO, randomized_zoo_model
from moprune.evaluation import Evaluator
from moprune.exceptions import MopruneError, MopruneValueError
from moprune.problem import PruningProblem
from moprune.space import ChannelSpace, LowRankChannelSpace, LowRankSpace, Plan
from moprune.space.lowrank import factorize, rank_of

_SPACES = {}


def space_for(cls, name, **kwargs):
    key = (cls.__name__, name, tuple(sorted(kwargs.items())))
    if key not in _SPACES:
        _SPACES[key] = cls(randomized_zoo_model(name), **kwargs)
    return _SPACES[key]


def random_genomes(space, n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(space.xl, space.xu + 1, size=(n, space.n_var))


def thop_counts(model, shape):
    return thop.profile(model, inputs=(torch.zeros(1, *shape),), verbose=False)


def output(model, seed=1):
    x = torch.randn(3, *model.input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------------------------- costs
@pytest.mark.parametrize("cls", [LowRankSpace, LowRankChannelSpace])
@pytest.mark.parametrize("name", ZOO)
def test_cost_equals_thop_on_the_materialized_model(cls, name):
    space = space_for(cls, name)
    X = random_genomes(space, 5, seed=ZOO.index(name))
    X[0] = space.original()
    X[1] = space.xl  # the smallest ranks (and fewest channels)
    cost = space.cost(X)
    decomposed = 0
    for i, genome in enumerate(X):
        model = space.materialize(genome)
        assert not model.training
        macs, params = thop_counts(model, space.model.input_shape)
        assert (cost["macs"][i], cost["params"][i]) == (macs, params)
        decomposed += sum(isinstance(m, nn.Sequential) and len(m) in (2, 3) and all(
            isinstance(c, (nn.Linear, nn.Conv2d)) for c in m) for m in model.modules())
    assert decomposed > 0  # some layers were factorised, so the comparison is not trivial
    assert cost["macs"][0] == space.base_macs and cost["params"][0] == space.base_params
    assert cost["macs_ratio"][1] < 0.5 and cost["sparsity"][1] == pytest.approx(1 - cost["params_ratio"][1])


# ---------------------------------------------------------------------------------- faithfulness
@pytest.mark.parametrize("cls", [LowRankSpace, LowRankChannelSpace])
@pytest.mark.parametrize("name", ZOO)
def test_full_rank_genome_reproduces_the_base_model(cls, name):
    base = randomized_zoo_model(name)
    # every layer decomposed at full rank: the factorisation itself must be exact
    space = cls(base, only_if_cheaper=False)
    model = space.materialize(space.original())
    n_seq = sum(isinstance(m, nn.Sequential) and isinstance(m[0], (nn.Linear, nn.Conv2d)) for m in model.modules())
    assert n_seq == len(space.lowrank.layers if cls is LowRankChannelSpace else space.layers)
    assert torch.allclose(output(model), output(base), atol=1e-4, rtol=0)
    # default: a full-rank layer is never cheaper, so the original genome is the base model itself
    default = space_for(cls, name)
    same = default.materialize(default.original())
    assert torch.equal(output(same), output(default.model))


@pytest.mark.parametrize("shape", [(40, 30), (20, 50)], ids=["wide", "tall"])
def test_truncated_svd_is_the_best_rank_r_approximation(shape):
    torch.manual_seed(0)
    layer = nn.Linear(*shape)
    r = 7
    seq = factorize(layer, (r,))
    assert [type(m) for m in seq] == [nn.Linear, nn.Linear] and seq[0].bias is None
    assert seq[0].weight.shape == (r, shape[0]) and seq[1].weight.shape == (shape[1], r)
    w = layer.weight.detach().double()
    approx = (seq[1].weight.double() @ seq[0].weight.double())
    s = torch.linalg.svdvals(w)
    assert torch.linalg.norm(w - approx).item() == pytest.approx(s[r:].square().sum().sqrt().item(), rel=1e-5)
    # singular values split evenly: both factors carry sqrt(s_i)
    assert torch.allclose(seq[0].weight.norm(dim=1).double() ** 2, s[:r], rtol=1e-4)
    assert torch.allclose(seq[1].weight.norm(dim=0).double() ** 2, s[:r], rtol=1e-4)
    x = torch.randn(5, shape[0])
    with torch.no_grad():
        assert torch.allclose(seq(x), x @ approx.float().T + layer.bias, atol=1e-5)


def test_tucker2_is_the_hosvd_projection():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    seq = factorize(conv, (4, 3))  # (r_out, r_in)
    assert [m.kernel_size for m in seq] == [(1, 1), (3, 3), (1, 1)]
    assert [(m.in_channels, m.out_channels) for m in seq] == [(6, 3), (3, 4), (4, 10)]
    assert seq[1].stride == (2, 2) and seq[1].padding == (1, 1) and seq[2].bias is not None
    w = conv.weight.detach().double()
    u_out = torch.linalg.svd(w.reshape(10, -1))[0][:, :4]
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(6, -1))[0][:, :3]
    projected = torch.einsum("oa,pa,pikl,ib,jb->ojkl", u_out, u_out, w, u_in, u_in).float()
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        expected = nn.functional.conv2d(x, projected, conv.bias, stride=2, padding=1)
        assert torch.allclose(seq(x), expected, atol=1e-5)
        assert not torch.allclose(seq(x), conv(x), atol=1e-3)  # rank 4x3 of 10x6 is an approximation


def test_factorize_refuses_bad_layers_and_ranks():
    with pytest.raises(MopruneValueError, match="module must be"):
        factorize(nn.Conv2d(4, 4, 3, groups=2), (2, 2))
    with pytest.raises(MopruneValueError, match="ranks must be"):
        factorize(nn.Linear(5, 3), (4,))
    with pytest.raises(MopruneValueError, match="ranks must be"):
        factorize(nn.Conv2d(4, 6, 3), (2,))


# ---------------------------------------------------------------------------------- encoding
def test_rank_levels_follow_eqs_3_and_4():
    assert rank_of(1, 500, 64) == 8 and rank_of(64, 500, 64) == 500 and rank_of(32, 500, 64) == 250
    assert rank_of(1, 10, 64) == 1 and rank_of(64, 10, 64) == 10
    assert rank_of(1, 50, 8) == 7 and rank_of(8, 50, 8) == 50
    levels = np.arange(1, 65)
    ranks = rank_of(levels, 100, 64)
    assert (np.diff(ranks) >= 0).all() and ranks[0] == 2 and ranks[-1] == 100


def test_lenet5_caffe_genes_and_only_if_cheaper():
    space = space_for(LowRankSpace, "lenet5_caffe")
    assert space.group_names == ["conv1", "conv2", "fc1", "fc2"] and space.vtype is int
    assert space.gene_names == ["conv1:rank_out", "conv1:rank_in", "conv2:rank_out", "conv2:rank_in",
                                "fc1:rank", "fc2:rank"]
    assert space.xu.tolist() == [8, 8, 8, 8, 64, 64] and space.xl.tolist() == [1] * 6
    x = space.original().copy()
    x[4] = 32  # fc1: 800 -> 500, rank 250: 800*250 + 250*500 = 325,000 < 400,000 MACs
    plan = space.decode(x)
    assert dict(plan.kept)["fc1"] == (250,) and plan.summary["rank/fc1"] == 250
    model = space.materialize(x)
    assert isinstance(model.fc1, nn.Sequential) and isinstance(model.conv2, nn.Conv2d)
    assert space.cost(x)["macs"][0] == space.base_macs - 800 * 500 + 800 * 250 + 250 * 500
    x[4] = 50  # rank 391: 800*391 + 391*500 > 400,000: kept as it is
    assert dict(space.decode(x).kept)["fc1"] == () and space.decode(x).summary["rank/fc1"] == 0
    assert isinstance(space.materialize(x).fc1, nn.Linear) and space.cost(x)["macs"][0] == space.base_macs


def test_layers_ignored_layers_and_grouped_convolutions():
    class Net(nn.Module):
        input_shape = (4, 8, 8)

        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
            self.grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)
            self.conv = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            x = self.conv(self.grouped(self.dw(x)))
            return self.fc(x.mean(dim=(2, 3)))

    net = Net().eval()
    space = LowRankSpace(net)
    assert space.group_names == ["conv", "fc"] and set(space.skipped) == {"dw", "grouped"}
    assert "grouped" in space.skipped["grouped"]
    assert LowRankSpace(net, ignored_layers=["fc"]).group_names == ["conv"]
    assert LowRankSpace(net, layers=[net.fc]).group_names == ["fc"]
    with pytest.raises(MopruneValueError, match=r"layers must be .*grouped"):
        LowRankSpace(net, layers=["grouped"])
    with pytest.raises(MopruneValueError, match="ignored_layers must be"):
        LowRankSpace(net, ignored_layers=["nope"])
    with pytest.raises(MopruneError, match="no layer to decompose"):
        LowRankSpace(net, ignored_layers=["conv", "fc"])
    x = torch.randn(2, 4, 8, 8)
    model = space.materialize(space.xl)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    assert model.dw is not net.dw and torch.equal(model.dw.weight, net.dw.weight)


def test_integer_genomes_are_validated():
    space = space_for(LowRankSpace, "lenet5_caffe")
    good = space.original()
    assert space.check_population(good).dtype == np.int64
    assert space.check_population(good.astype(float)).tolist() == [good.tolist()]
    with pytest.raises(MopruneValueError, match="non-integer"):
        space.cost(good + 0.5)
    bad = good.copy()
    bad[4] = 65
    with pytest.raises(MopruneValueError, match=r"gene 4: 1\.\.64.*got 'values in \[65, 65\] at gene 4'"):
        space.decode(bad)
    with pytest.raises(MopruneValueError, match="length 6"):
        space.cost(np.ones(5, dtype=int))
    with pytest.raises(MopruneValueError, match="integer genome"):
        space.cost(np.ones(6, dtype=bool))
    repair = space.repair()
    fixed = repair._do(None, np.array([[0.4, 9.7, 3.5, 2.2, 70.0, -3.0]]))
    assert fixed.dtype == np.int64 and fixed.tolist() == [[1, 8, 4, 2, 64, 1]]
    with pytest.raises(MopruneValueError, match="svd_levels must be"):
        LowRankSpace(randomized_zoo_model("lenet5_caffe"), svd_levels=0)


def test_plans_ratios_and_base_model_untouched():
    space = space_for(LowRankSpace, "vgg_small")
    before = {k: v.clone() for k, v in space.model.state_dict().items()}
    X = random_genomes(space, 3, seed=5)
    for x in X:
        plan = space.decode(x)
        assert torch.equal(output(space.materialize(plan)), output(space.materialize(x)))
        for p in space.materialize(x).parameters():
            p.data.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in space.model.state_dict().items())
    # genomes that round to the same ranks are one plan (the evaluation cache relies on it)
    fc = space.group_names.index("classifier.3")  # R = 10: levels 1..6 are all rank 1
    a, b = X[0].copy(), X[0].copy()
    a[space.group_slices[fc]], b[space.group_slices[fc]] = 1, 6
    assert space.decode(a).key == space.decode(b).key
    with pytest.raises(MopruneValueError, match="x_or_plan must be"):
        space.materialize(Plan(kind="channels", kept=(), key="k"))
    R = space.group_ratios(X)
    assert R.shape == (3, len(space.group_names)) and np.all((R > 0) & (R <= 1))
    back = space.genomes_from_ratios(np.ones((1, len(space.group_names))))
    assert back.tolist() == [space.original().tolist()]


# ---------------------------------------------------------------------------------- D + Ps
def test_combined_prunes_channels_first_then_decomposes_what_is_left():
    space = space_for(LowRankChannelSpace, "lenet5_caffe")
    assert space.n_channel_genes == 3 and space.vtype is int and space.prunes_channels
    assert space.gene_names[:3] == ["channels:conv1", "channels:conv2", "channels:fc1"]
    x = space.original().copy()
    x[2] = 32  # fc1 keeps 250 of its 500 outputs
    fc1 = space.n_channel_genes + space.lowrank.gene_names.index("fc1:rank")
    x[fc1] = 16  # rank ceil(16 * min(800, 250) / 64) = 63 of the pruned 800 x 250 layer
    plan = space.decode(x)
    (_, channel_kept), (_, ranks) = plan.kept
    assert len(dict(channel_kept)["fc1"]) == 250 and dict(ranks)["fc1"] == (63,)
    model = space.materialize(x)
    assert [m.weight.shape for m in model.fc1] == [(63, 800), (250, 63)] and model.fc2.in_features == 250
    # the decomposition is that of the channel-pruned layer
    pruned = ChannelSpace(space.model, encoding="ratio").materialize(np.array([1.0, 1.0, 0.5]))
    with torch.no_grad():
        assert torch.allclose(model.fc1[0].weight.T @ model.fc1[1].weight.T,
                              factorize(pruned.fc1, (63,))[0].weight.T @ factorize(pruned.fc1, (63,))[1].weight.T,
                              atol=1e-5)
    # full ranks: exactly the channel-pruned model
    x[fc1] = 64
    assert torch.equal(output(space.materialize(x)), output(pruned))
    cost = space.cost(x)
    assert cost["macs"][0] == thop_counts(pruned, (1, 28, 28))[0]


def test_combined_space_with_batchnorm_needs_bn_recalibration_data():
    space = space_for(LowRankChannelSpace, "vgg_small")
    val = torch.utils.data.TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    with pytest.raises(MopruneValueError, match="train_data"):
        PruningProblem(space, Evaluator(val, n_samples=None))
    PruningProblem(space_for(LowRankSpace, "vgg_small"), Evaluator(val, n_samples=None))  # no channel removed
