"""The whole pipeline on a small MNIST subset: baseline -> space -> NSGA-II -> front -> pick -> retrain -> export."""

import numpy as np
import pytest
import torch

import moprune
from moprune.data import Splits, subset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def mnist_small(tmp_path_factory):
    full = moprune.load_mnist(cache=str(tmp_path_factory.mktemp("cache")))
    return Splits(subset(full.train, 6000), subset(full.val, 600), subset(full.test, 2000))


@pytest.fixture(scope="module")
def lenet(mnist_small):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = moprune.get_model("lenet5")
    moprune.fit(model, mnist_small.train, epochs=3, lr=2e-3, optimizer="adam", batch_size=64,
                weight_decay=0.0, generator=torch.Generator().manual_seed(0),
                progress=False)
    return model


def test_search_pick_retrain_export_on_mnist(mnist_small, lenet, tmp_path):
    base_val = moprune.evaluate(lenet, mnist_small.val)
    assert base_val > 0.9  # 3 epochs of Adam on 6,000 images

    space = moprune.ChannelSpace(lenet, torch.zeros(1, 1, 28, 28), encoding="binary")
    evaluator = moprune.Evaluator(mnist_small.val, n_samples=600, batch_size=300)
    problem = moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))
    result = moprune.search(problem, "nsga2", pop_size=12, n_evals=48, seed=3)

    assert len(result.archive) == 48
    assert result.base_accuracy == pytest.approx(base_val)
    frame = moprune.to_frame(result)
    # archive costs are the space's analytic costs of the same genomes
    genomes = np.stack([e.genome for e in result.archive])
    np.testing.assert_allclose(frame["macs_ratio"].to_numpy(), space.cost(genomes)["macs_ratio"])

    front = moprune.pareto_front(result)
    assert 1 <= len(front) <= len(frame)
    F = front[["error", "macs_ratio"]].to_numpy()
    for i in range(len(F)):  # no front row dominates another
        dominated = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        assert not dominated.any()

    row = moprune.pick(front, method="target_macs", target_macs=0.9)
    assert row["macs_ratio"] <= 0.9

    done = moprune.retrain((space, row["genome"]), data=mnist_small, base_model=lenet, epochs=1, seed=0)
    assert done.macs_ratio == pytest.approx(row["macs_ratio"])
    assert done.test_accuracy > 0.85  # measured on the test subset, the only place it is touched

    path = tmp_path / "pruned.pt"
    moprune.export(done.model, path)
    reloaded = moprune.load(path)
    x = mnist_small.test.tensors[0][:64]
    assert torch.equal(reloaded(x), done.model(x))
