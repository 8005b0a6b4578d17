"""Least-squares reconstruction: pruned layers refit to the base model's outputs."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import moprune
from conftest import randomized_zoo_model
from moprune.exceptions import MopruneValueError
from moprune.reconstruction import kept_outputs, reconstruct, reconstructed, supports_reconstruction


def _images(n, shape, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _relative_error(model, base, x):
    with torch.no_grad():
        out, ref = model(x), base(x)
    return float(((out - ref) ** 2).mean() / ref.var())


@pytest.mark.parametrize("name", ["lenet5", "vgg_small", "resnet8"])
def test_reconstructed_channel_pruned_model_is_closer_to_the_base_on_unseen_images(name):
    base = randomized_zoo_model(name)
    space = moprune.ChannelSpace(base, encoding="ratio")
    genome = np.full(space.n_var, 0.5)
    train = TensorDataset(_images(96, base.input_shape), torch.zeros(96, dtype=torch.long))
    plain = space.materialize(genome)
    refit = reconstructed(space, genome, base, train, n_samples=96, seed=0)
    unseen = _images(64, base.input_shape, seed=1)
    assert _relative_error(refit, base, unseen) < 0.8 * _relative_error(plain, base, unseen)
    # same structure, so the same MACs: only weights changed
    assert [p.shape for p in refit.parameters()] == [p.shape for p in plain.parameters()]
    assert not refit.training


def test_reconstruction_of_decomposed_layers_refits_their_last_factor():
    base = randomized_zoo_model("mnist_cnn")
    space = moprune.LowRankChannelSpace(base)
    genome = space.original().copy()
    genome[:space.n_channel_genes] = 32  # half the channels
    genome[space.n_channel_genes:] = 2  # low ranks
    train = TensorDataset(_images(128, base.input_shape), torch.zeros(128, dtype=torch.long))
    plain = space.materialize(genome)
    refit = reconstructed(space, genome, base, train, n_samples=128)
    assert isinstance(refit.fc1, nn.Sequential)
    assert torch.equal(refit.fc1[0].weight, plain.fc1[0].weight)  # the first factor is kept
    assert not torch.equal(refit.fc1[1].weight, plain.fc1[1].weight)
    unseen = _images(64, base.input_shape, seed=1)
    assert _relative_error(refit, base, unseen) < _relative_error(plain, base, unseen)


def test_reconstruct_solves_the_least_squares_problem_of_each_layer():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3)).double().eval()
    pruned = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    keep = torch.tensor([0, 2, 5, 7])
    with torch.no_grad():
        pruned[0].weight.copy_(base[0].weight[keep])
        pruned[0].bias.copy_(base[0].bias[keep])
        pruned[2].weight.copy_(base[2].weight[:, keep])
        pruned[2].bias.copy_(base[2].bias)
    x = torch.randn(500, 6, dtype=torch.float64)
    errors = reconstruct(pruned, base, x, kept={"0": keep}, ridge=1e-12)
    assert set(errors) == {"0", "2"}
    # the first layer reproduces its kept outputs exactly already: its weights are kept
    assert torch.allclose(pruned[0].weight, base[0].weight[keep])
    assert errors["0"][0] == pytest.approx(0.0, abs=1e-12)
    # the second is the ordinary least-squares solution (with a bias column)
    with torch.no_grad():
        hidden = torch.relu(pruned[0](x))
        target = base(x)
    design = torch.cat([hidden, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    solution = torch.linalg.lstsq(design, target).solution
    assert torch.allclose(pruned[2].weight, solution[:4].T, atol=1e-6)
    assert torch.allclose(pruned[2].bias, solution[4], atol=1e-6)
    assert errors["2"][1] < errors["2"][0]


def test_reconstruction_is_seeded_and_leaves_the_base_model_alone():
    base = randomized_zoo_model("lenet5")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    space = moprune.ChannelSpace(base, encoding="ratio")
    genome = np.full(space.n_var, 0.4)
    train = TensorDataset(_images(200, base.input_shape), torch.zeros(200, dtype=torch.long))
    a = reconstructed(space, genome, base, train, n_samples=50, seed=3)
    b = reconstructed(space, genome, base, train, n_samples=50, seed=3)
    c = reconstructed(space, genome, base, train, n_samples=50, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())


def test_weight_masks_are_refused_and_bad_arguments_named():
    base = randomized_zoo_model("lenet5")
    weights = moprune.WeightSpace(base)
    assert not supports_reconstruction(weights)
    assert supports_reconstruction(moprune.ChannelSpace(base))
    with pytest.raises(MopruneValueError, match="space.*WeightSpace"):
        kept_outputs(weights, weights.original())
    channels = moprune.ChannelSpace(base, encoding="ratio")
    pruned = channels.materialize(np.full(channels.n_var, 0.5))
    x = _images(8, base.input_shape)
    with pytest.raises(MopruneValueError, match="ridge"):
        reconstruct(pruned, base, x, ridge=0)
    with pytest.raises(MopruneValueError, match="images"):
        reconstruct(pruned, base, [1, 2, 3])


def test_retrain_starts_from_the_reconstructed_model_unless_told_not_to():
    from test_export import tiny_splits, trained_lenet5

    data = tiny_splits(n_train=128, n_eval=64)
    base = trained_lenet5(data, epochs=1)
    space = moprune.ChannelSpace(base, encoding="ratio")
    genome = np.full(space.n_var, 0.5)
    expected = reconstructed(space, genome, base, data.train, seed=0)
    frozen = dict(max_steps=1, lr=1e-30, weight_decay=0.0, momentum=0.0, batch_size=16, seed=0)
    done = moprune.retrain((space, genome), data=data, base_model=base, **frozen)
    plain = moprune.retrain((space, genome), data=data, base_model=base, reconstruct=False, **frozen)
    for name, value in expected.state_dict().items():
        assert torch.allclose(done.model.state_dict()[name].float(), value.float(), atol=1e-6), name
    assert all(torch.allclose(p, q) for p, q in zip(plain.model.parameters(), space.materialize(genome).parameters()))
    with pytest.raises(MopruneValueError, match="reconstruct"):
        moprune.retrain((space, genome), data=data, base_model=base, reconstruct="yes", **frozen)


def test_reconstruction_is_the_default_for_models_without_batchnorm_only():
    from moprune.reconstruction import reconstruct_by_default

    assert reconstruct_by_default(randomized_zoo_model("mnist_cnn"))
    assert reconstruct_by_default(randomized_zoo_model("lenet5"))
    assert not reconstruct_by_default(randomized_zoo_model("vgg_small"))
    assert not reconstruct_by_default(randomized_zoo_model("resnet8"))
    assert not reconstruct_by_default(None)


def test_a_race_reconstructs_each_contender_once(monkeypatch):
    from test_export import tiny_splits, trained_lenet5

    import moprune.retraining
    from moprune.race import successive_halving

    data = tiny_splits(n_train=128, n_eval=64)
    base = trained_lenet5(data, epochs=1)
    space = moprune.ChannelSpace(base, encoding="ratio")
    built = []
    real = moprune.retraining.reconstructed

    def counting(space_, genome, *args, **kwargs):
        built.append(tuple(np.round(genome, 6)))
        return real(space_, genome, *args, **kwargs)

    monkeypatch.setattr(moprune.retraining, "reconstructed", counting)
    contenders = [("a", np.full(space.n_var, 0.5)), ("b", np.full(space.n_var, 0.4)), ("c", np.full(space.n_var, 0.6))]
    successive_halving(space, contenders, data=data, budget_steps=6, base_model=base, batch_size=16)
    assert sorted(built) == sorted(tuple(np.round(g, 6)) for _, g in contenders)  # 3 + 1 rounds, 3 refits
    built.clear()
    successive_halving(space, contenders, data=data, budget_steps=6, base_model=base, reconstruct=False, batch_size=16)
    successive_halving(space, contenders, data=data, budget_steps=6, batch_size=16)
    assert built == []


def test_layers_it_cannot_refit_are_left_as_they_are():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(1, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2, padding=1),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    pruned = copy.deepcopy(base)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    errors = reconstruct(pruned, base, _images(32, (1, 8, 8)))
    assert set(errors) == {"4"}  # "same" padding and grouped convolutions are not refit
    assert all(torch.equal(pruned.state_dict()[k], v) for k, v in before.items() if not k.startswith("4."))
    assert errors["4"][0] == pytest.approx(0.0, abs=1e-10)  # nothing to correct: the weights are kept
