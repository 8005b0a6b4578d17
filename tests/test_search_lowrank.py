"""Searches over integer genomes: every registered algorithm on LowRankSpace and LowRankChannelSpace."""

import numpy as np
import pytest
import torch
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from torch import nn
from torch.utils.data import TensorDataset

from moprune.algorithms import ALGORITHMS
from moprune.evaluation import Evaluator
from moprune.exceptions import MopruneValueError
from moprune.operators import default_operators
from moprune.operators.integer import (
    DiversityGuidedStepMutation,
    IntegerDirectedSampling,
    StepMutation,
    characterize_rank_boundaries,
)
from moprune.problem import PruningProblem
from moprune.searching import search
from moprune.space import LowRankChannelSpace, LowRankSpace

REFUSE_INTEGER = {"focused"}
"""Registered algorithms that refuse integer genomes (with a MopruneValueError naming them)."""


class TinyCNN(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv3(torch.relu(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


_MODEL = []


def tiny_model():
    """A fixed tiny CNN; its own predictions are the labels, so its accuracy is 1."""
    if not _MODEL:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            _MODEL.append(TinyCNN().eval())
    return _MODEL[0]


def tiny_problem(cls, **space_kwargs):
    model = tiny_model()
    x = torch.randn(120, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    evaluator = Evaluator(TensorDataset(x, y), n_samples=None, batch_size=120, num_threads=1)
    return PruningProblem(cls(model, **space_kwargs), evaluator, objectives=("error", "macs"))


def _fingerprint(result):
    return [(e.genome.tobytes(), e.plan_key, e.objectives, e.accuracy, e.macs, e.generation, e.cached)
            for e in result.archive]


@pytest.mark.parametrize("cls", [LowRankSpace, LowRankChannelSpace])
@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_accepting_integer_genomes_runs_and_is_reproducible(name, cls):
    if name in REFUSE_INTEGER:
        with pytest.raises(MopruneValueError, match="integer"):
            ALGORITHMS.get(name)(tiny_problem(cls), pop_size=6)
        return
    runs = [search(tiny_problem(cls), name, pop_size=6, n_evals=24, seed=seed) for seed in (3, 3, 4)]
    assert _fingerprint(runs[0]) == _fingerprint(runs[1])
    assert _fingerprint(runs[0]) != _fingerprint(runs[2])
    space = runs[0].space
    G = np.array([e.genome for e in runs[0].archive])
    assert len(G) == 24 and G.dtype == np.int64
    assert (G >= space.xl).all() and (G <= space.xu).all()
    assert len({g.tobytes() for g in G}) > 1  # the search moved
    cost = space.cost(G)
    np.testing.assert_array_equal([e.macs for e in runs[0].archive], cost["macs"])
    assert all(e.error is None for e in runs[0].archive)


@pytest.mark.parametrize("scoring", ["weighted", "threshold", "genecai"])
def test_ga_with_each_scoring_on_ranks(scoring):
    result = search(tiny_problem(LowRankSpace), "ga", pop_size=6, n_evals=24, seed=0, scoring=scoring)
    assert result.n_evals == 24 and result.objectives[-1] == "neg_score"
    assert np.array([e.genome for e in result.archive]).dtype == np.int64


def test_nsga2_offspring_are_integers_from_sbx_and_steps():
    problem = tiny_problem(LowRankSpace)
    ops = default_operators(problem.space)
    assert type(ops["mutation"]) is StepMutation and ops["crossover"].repair is not None
    assert type(ops["sampling"]).__name__ == "IntegerRandomSampling"
    with pytest.raises(MopruneValueError, match="'random' for a integer space"):
        default_operators(problem.space, sampling="near_original")
    result = search(problem, "nsga2", pop_size=8, n_evals=40, seed=1)
    G = np.array([e.genome for e in result.archive])
    assert G.dtype == np.int64 and len({g.tobytes() for g in G[8:]} - {g.tobytes() for g in G[:8]}) > 10


def test_genecai_directed_initialization_of_ranks():
    problem = tiny_problem(LowRankSpace)
    result = search(problem, "genecai", pop_size=6, n_evals=60, seed=0, acc_threshold=90.0)
    algorithm = result.pymoo_result.algorithm
    theta = algorithm.theta
    space = problem.space
    assert theta.dtype == np.int64 and (theta >= space.xl).all() and (theta <= space.xu).all()
    assert algorithm.boundary_evals > 0 and type(algorithm.mutation) is DiversityGuidedStepMutation
    # the first population is drawn from {theta, ..., K}
    first = np.array([e.genome for e in result.archive[algorithm.boundary_evals:algorithm.boundary_evals + 6]])
    assert (first >= theta).all() and (first <= space.xu).all()
    # theta is eq. 17: its level keeps accuracy above the threshold, one level less does not
    base = space.original()
    for i in range(space.n_var):
        x = base.copy()
        x[i] = theta[i]
        assert problem.measure(x[None])["accuracy"][0] > 0.9 or theta[i] == space.xu[i]
        if theta[i] > space.xl[i]:
            x[i] = theta[i] - 1
            assert problem.measure(x[None])["accuracy"][0] <= 0.9


def test_characterize_rank_boundaries_is_a_bisection_per_gene():
    xl, xu = np.array([1, 1, 1]), np.array([64, 8, 8])
    truth = np.array([23, 1, 8])  # smallest acceptable level of each gene
    calls = []

    def accuracy_of(X):
        calls.append(len(X))
        return np.where((X >= truth).all(axis=1), 0.95, 0.5)

    theta = characterize_rank_boundaries(accuracy_of, xl=xl, xu=xu, accuracy_threshold=0.9)
    assert theta.tolist() == truth.tolist()
    assert calls == [3, 3, 3, 1, 1, 1]  # log2(64) steps for the 64-level gene, log2(8) for the others
    short = characterize_rank_boundaries(accuracy_of, xl=xl, xu=xu, accuracy_threshold=0.9, max_steps=2)
    assert (short >= truth).all() and (short <= xu).all()


def test_step_mutation_moves_one_level_within_bounds():
    problem = Problem(n_var=3, xl=np.array([1, 1, 1]), xu=np.array([8, 8, 1]), vtype=int)
    X = np.array([[1, 8, 1]] * 200 + [[4, 5, 1]] * 200)
    Y = StepMutation(prob_var=1.0)._do(problem, X, random_state=np.random.default_rng(0))
    assert Y.dtype == np.int64
    assert (Y[:200] == [2, 7, 1]).all()  # reflected at the bounds, fixed gene unchanged
    d = Y[200:, :2] - X[200:, :2]
    assert set(np.unique(d)) == {-1, 1} and 0.35 < (d == 1).mean() < 0.65
    Y = StepMutation()._do(problem, X[200:], random_state=np.random.default_rng(1))
    assert ((Y != X[200:]).sum(axis=1) >= 1).all()  # at least one gene moves
    with pytest.raises(MopruneValueError, match="prob_var must be"):
        StepMutation(prob_var=2.0)


def test_integer_directed_sampling_and_diversity_guided_steps():
    problem = Problem(n_var=2, xl=np.array([1, 1]), xu=np.array([64, 8]), vtype=int)
    X = IntegerDirectedSampling(theta=[40, 7])._do(problem, 500, random_state=np.random.default_rng(0))
    assert X[:, 0].min() == 40 and X[:, 0].max() == 64 and set(X[:, 1]) == {7, 8}
    mutation = DiversityGuidedStepMutation(p_tweak=1.0, p_mutate=1.0)
    pop = Population.new("X", X)
    Y = mutation.do(problem, pop, random_state=np.random.default_rng(1)).get("X")
    assert (np.abs(Y - X) == 1).all()
    with pytest.raises(MopruneValueError, match="theta must be"):
        IntegerDirectedSampling(theta=[1.5, 2])
