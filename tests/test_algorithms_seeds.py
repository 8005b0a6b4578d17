"""End-to-end tests of the seed documents' own loops: threshold_ga, genecai, sa, two_step.

Most tests run on a tiny fake space whose accuracy is a known analytic function of the genome
(so boundaries and optima are known and runs take milliseconds); one test per algorithm
family runs a real tiny network through the real :class:`moprune.Evaluator`.
"""

import numpy as np
import pytest
from pymoo.core.repair import Repair
from pymoo.indicators.hv import HV

from moprune.algorithms import ALGORITHMS
from moprune.evaluation.cache import EvalRecord
from moprune.exceptions import MopruneValueError
from moprune.problem import PruningProblem
from moprune.searching import search
from moprune.space.base import Plan, Space

BASE_ACCURACY = 0.9


class _ClipRepair(Repair):
    def _do(self, problem, X, **kwargs):
        space = problem.space
        if space.vtype is bool:
            X = np.asarray(X, dtype=bool).copy()
            for sl in space.group_slices:
                empty = ~X[:, sl].any(axis=1)
                X[empty, sl.start] = True
            return X
        return np.clip(np.asarray(X, dtype=float), space.xl, space.xu)


class FakeSpace(Space):
    """A space with ``n_groups`` groups whose cost is linear in the kept fraction per group.

    Real encoding: one keep ratio per group in [0, 1]. Binary encoding: ``bits`` bits per group.
    """

    def __init__(self, n_groups=4, *, binary=False, bits=4):
        self.binary = binary
        self.bits = bits if binary else 1
        self.n_var = n_groups * self.bits
        self.xl = np.zeros(self.n_var)
        self.xu = np.ones(self.n_var)
        self.vtype = bool if binary else float
        self.encoding = "binary" if binary else "ratio"
        self.model = None
        self.base_macs = 1000
        self.base_params = 100
        self.group_names = [f"g{i}" for i in range(n_groups)]
        self.group_slices = [slice(i * self.bits, (i + 1) * self.bits) for i in range(n_groups)]
        self.macs_weights = np.linspace(1.0, 2.0, n_groups)
        self.params_weights = np.linspace(2.0, 1.0, n_groups)

    def keep(self, X):
        X = np.atleast_2d(np.asarray(X, dtype=float))
        return np.stack([X[:, sl].mean(axis=1) for sl in self.group_slices], axis=1)

    def decode(self, x):
        x = self.check_genome(x)
        key = np.round(np.asarray(x, dtype=float), 12).tobytes().hex()
        return Plan("fake", tuple(np.round(self.keep(x)[0], 6)), key, {})

    def materialize(self, x_or_plan):
        raise NotImplementedError("the fake space has no network")

    def cost(self, X):
        k = self.keep(X)
        macs_ratio = k @ self.macs_weights / self.macs_weights.sum()
        params_ratio = k @ self.params_weights / self.params_weights.sum()
        return {"macs": macs_ratio * self.base_macs, "params": params_ratio * self.base_params,
                "macs_ratio": macs_ratio, "params_ratio": params_ratio, "sparsity": 1.0 - k.mean(axis=1)}

    def repair(self):
        return _ClipRepair()


class FakeEvaluator:
    """Accuracy = base - sum_g slope_g * max(0, pruned_g - tolerance_g): monotone, known boundaries."""

    def __init__(self, space, *, tolerance=None, slope=None):
        n = len(space.group_slices)
        self.tolerance = np.linspace(0.1, 0.6, n) if tolerance is None else np.asarray(tolerance, float)
        self.slope = np.linspace(0.2, 1.0, n) if slope is None else np.asarray(slope, float)
        self.n_runs = 0

    def accuracy_of(self, space, X):
        pruned = 1.0 - space.keep(X)
        return BASE_ACCURACY - (self.slope * np.maximum(0.0, pruned - self.tolerance)).sum(axis=1)

    def boundary(self, drop):
        """Largest single-group pruning rate keeping accuracy above ``BASE_ACCURACY - drop``."""
        return np.minimum(1.0, self.tolerance + drop / self.slope)

    def evaluate(self, space, X):
        acc = self.accuracy_of(space, X)
        self.n_runs += len(acc)
        return [EvalRecord(plan_key=space.decode(x).key, accuracy=float(a)) for x, a in zip(X, acc)]

    def evaluate_model(self, model):
        return BASE_ACCURACY


def fake_problem(*, binary=False, n_groups=4, objectives=("error", "macs"), max_accuracy_drop=5.0, **kwargs):
    space = FakeSpace(n_groups, binary=binary)
    evaluator = FakeEvaluator(space, **kwargs)
    return PruningProblem(space, evaluator, objectives=objectives, max_accuracy_drop=max_accuracy_drop)


# ---------------------------------------------------------------------------- helpers


# (algorithm, binary genome?, options) covering every seed loop and its modes
CONFIGS = [
    ("threshold_ga", True, {"n_parents": 4}),
    ("threshold_ga", False, {"n_parents": 4}),
    ("genecai", False, {}),
    ("sa", True, {}),
    ("sa", False, {}),
    ("sa", True, {"layerwise": True}),
    ("layerwise_ga", True, {}),
    ("layerwise_ga", False, {"layerwise": False}),
    ("two_step", True, {}),
    ("two_step", False, {"inner": "ga", "n_rounds": 3}),
]
IDS = [f"{name}-{'bin' if binary else 'real'}-{'-'.join(f'{k}={v}' for k, v in opts.items())}"
       for name, binary, opts in CONFIGS]


def scores(result):
    """Score of every archive entry (the scalarized problem stores -score last)."""
    assert result.objectives[-1] == "neg_score"
    return -np.array([e.objectives[-1] for e in result.archive])


def same_archive(a, b):
    return len(a.archive) == len(b.archive) and all(
        np.array_equal(x.genome, y.genome) and x.objectives == y.objectives and x.generation == y.generation
        and (x.accuracy == y.accuracy) for x, y in zip(a.archive, b.archive))


def run(problem, name, *, pop_size, seed=0, n_gen=None, n_evals=None, callback=None, **options):
    """``search`` by name; also returns the algorithm object that ran (caught by the callback)."""
    ran = []

    def record(algorithm, _problem):
        ran[:] = [algorithm]
        if callback is not None:
            callback(algorithm)

    result = search(problem, name, pop_size=pop_size, seed=seed, n_gen=n_gen, n_evals=n_evals, callbacks=[record],
                    **options)
    return result, ran[0]


def test_all_seed_algorithms_registered():
    assert {"threshold_ga", "genecai", "sa", "two_step"} <= set(ALGORITHMS.names())


# ---------------------------------------------------------------------------- budgets, determinism


@pytest.mark.parametrize("name, binary, options", CONFIGS, ids=IDS)
def test_n_evals_budget_is_exact(name, binary, options):
    result = search(fake_problem(binary=binary), name, pop_size=8, n_evals=77, seed=0, **options)
    assert result.n_evals == 77
    assert result.algorithm == name


@pytest.mark.parametrize("name, binary, options", CONFIGS, ids=IDS)
def test_n_gen_budget(name, binary, options):
    result = search(fake_problem(binary=binary), name, pop_size=6, n_gen=5, seed=0, **options)
    generations = {e.generation for e in result.archive}
    assert max(generations) == 4 and min(generations) == 0


@pytest.mark.parametrize("name, binary, options", CONFIGS, ids=IDS)
def test_same_seed_same_archive(name, binary, options):
    runs = [search(fake_problem(binary=binary), name, pop_size=8, n_evals=90, seed=s, **options) for s in (3, 3, 4)]
    assert same_archive(runs[0], runs[1])
    assert not same_archive(runs[0], runs[2])


# ---------------------------------------------------------------------------- improvement


SCORED = [c for c in CONFIGS if c[:2] != ("two_step", True)]  # two_step/nsga2: see the HV test


@pytest.mark.parametrize("name, binary, options", SCORED, ids=[IDS[CONFIGS.index(c)] for c in SCORED])
def test_improves_over_initial_population(name, binary, options):
    problem = fake_problem(binary=binary)
    result, algorithm = run(problem, name, pop_size=10, n_gen=15, **options)
    s = scores(result)
    gen = np.array([e.generation for e in result.archive])
    skip = getattr(algorithm, "boundary_evals", 0)  # genecai's bisection candidates are not P^0
    s, gen = s[skip:], gen[skip:]
    initial = s[gen == 0]
    assert s.max() > initial.max() + 1e-6  # a better candidate than any initial one
    # and the population (SA: the chains' states) moved there
    final = -(algorithm.state_F if name == "sa" else algorithm.pop.get("F")[:, 0])
    assert final.mean() > initial.mean()


def test_two_step_nsga2_improves_front():
    problem = fake_problem(binary=True)
    result = search(problem, "two_step", pop_size=10, n_gen=12, seed=0)
    F = np.array([e.objectives for e in result.archive])
    gen = np.array([e.generation for e in result.archive])
    hv = HV(ref_point=np.array([1.0, 1.0]))
    initial, final = hv(F[gen == 0]), hv(F)
    assert final > 1.1 * initial, (initial, final)


def test_genecai_mean_score_of_population_improves():
    problem = fake_problem(binary=False, n_groups=6)
    result, algorithm = run(problem, "genecai", pop_size=20, n_gen=20)
    s = scores(result)[algorithm.boundary_evals:]
    gen = np.array([e.generation for e in result.archive])[algorithm.boundary_evals:]
    assert s[gen == 19].mean() > 1.5 * s[gen == 0].mean()


# ---------------------------------------------------------------------------- genecai specifics


def test_genecai_directed_initialization_finds_boundaries_through_the_problem():
    problem = fake_problem(binary=False, max_accuracy_drop=5.0)
    result, algorithm = run(problem, "genecai", pop_size=8, n_gen=2, bisection_steps=7)
    boundary = problem.evaluator.boundary(0.05)  # acc_thr = 90 - 5 points
    assert np.all(algorithm.theta <= boundary)
    np.testing.assert_allclose(algorithm.theta, boundary, atol=2.0**-7)
    # 4 groups x 7 steps, archived and counted before P^0
    assert algorithm.boundary_evals == 28
    assert result.n_evals == 28 + 2 * 8
    for e in result.archive[:28]:
        assert np.sum(e.genome < 1.0) == 1  # one group pruned at a time
    # P^0 lies inside the characterised boundaries
    P0 = np.array([e.genome for e in result.archive[28:36]])
    assert np.all(1.0 - P0 <= algorithm.theta + 1e-12)
    assert algorithm.mutation.div_threshold > 0


def test_genecai_small_budget_shrinks_bisection():
    problem = fake_problem(binary=False)
    result, algorithm = run(problem, "genecai", pop_size=8, n_evals=20, bisection_steps=6)
    # 20 - 8 = 12 evaluations left for 4 groups: 3 steps
    assert algorithm.boundary_evals == 12
    assert result.n_evals == 20


def test_genecai_random_initialization_skips_bisection():
    problem = fake_problem(binary=False)
    _, algorithm = run(problem, "genecai", pop_size=8, n_gen=2, initialization="random")
    assert algorithm.boundary_evals == 0
    np.testing.assert_array_equal(algorithm.theta, np.ones(4))


def test_genecai_rejects_binary_space():
    with pytest.raises(MopruneValueError, match="continuous"):
        ALGORITHMS.get("genecai")(fake_problem(binary=True), pop_size=8)


# ---------------------------------------------------------------------------- threshold GA specifics


def test_threshold_ga_best_within_threshold_and_population_thresholded():
    problem = fake_problem(binary=True, max_accuracy_drop=None)
    result, algorithm = run(problem, "threshold_ga", pop_size=10, n_gen=12, n_parents=4, population_threshold=12,
                            threshold=2.0)
    assert len(algorithm.pop) <= 12
    best = algorithm.best
    entry = next(e for e in result.archive if np.array_equal(e.genome, best.X))
    assert 100 * (BASE_ACCURACY - entry.accuracy) < 2.0  # BEST stays in the acceptable region
    # BEST is the highest score ever evaluated
    assert -best.F[0] == pytest.approx(scores(result).max())
    # the population is the T best of everything kept: sorted, no duplicate genomes
    f = -algorithm.pop.get("F")[:, 0]
    assert np.all(np.diff(f) <= 0)
    assert len({x.tobytes() for x in algorithm.pop.get("X")}) == len(algorithm.pop)


def test_threshold_ga_four_offspring_per_pair():
    problem = fake_problem(binary=True, n_groups=8)
    result, _ = run(problem, "threshold_ga", pop_size=10, n_gen=2, n_parents=4, mutation_prob=0.0)
    second = [e for e in result.archive if e.generation == 1]
    # 2 pairs x 4 offspring; the parent copies come back with one gene changed (not duplicates)
    assert len(second) == 8
    parents = np.array([e.genome for e in result.archive if e.generation == 0])
    for e in second[4:]:
        assert np.min(np.sum(parents != e.genome, axis=1)) == 1


# ---------------------------------------------------------------------------- SA specifics


def test_sa_schedules():
    problem = fake_problem(binary=True)
    algorithm = ALGORITHMS.get("sa")(problem, pop_size=2, initial_temperature=0.1, final_temperature=0.001,
                                     mutation_rate=0.15, min_mutation_rate=0.02)
    assert algorithm.temperature(0.0) == pytest.approx(0.1)
    assert algorithm.temperature(0.5) == pytest.approx(0.01)
    assert algorithm.temperature(1.0) == pytest.approx(0.001)
    assert algorithm.rate(0.0) == pytest.approx(0.15)
    assert algorithm.rate(0.5) == pytest.approx(0.075)
    assert algorithm.rate(0.99) == pytest.approx(0.02)


def test_sa_layerwise_evolves_one_group_at_a_time_with_warmup():
    problem = fake_problem(binary=True, max_accuracy_drop=4.0)
    result, algorithm = run(problem, "sa", pop_size=3, n_gen=9, layerwise=True)
    original = np.ones(problem.n_var, dtype=bool)
    slices = problem.space.group_slices
    assert [algorithm.allowed_drop(i) for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert algorithm.stage == 3
    # generations 1-2 anneal group 0 only: nothing outside it changes
    outside = np.ones(problem.n_var, dtype=bool)
    outside[slices[0]] = False
    early = [e for e in result.archive if e.generation in (1, 2)]
    assert len(early) == 6
    assert all(np.array_equal(e.genome[outside], original[outside]) for e in early)
    assert any(not np.array_equal(e.genome, original) for e in early)
    # the last generation changes only group 3 relative to the states it started from
    last = [e for e in result.archive if e.generation == 8]
    for e, state in zip(last, algorithm.state_X):
        keep = np.ones(problem.n_var, dtype=bool)
        keep[slices[3]] = False
        assert np.array_equal(e.genome[keep], state[keep])


def test_layerwise_ga_evolves_one_group_at_a_time_from_the_best_so_far():
    problem = fake_problem(binary=True, max_accuracy_drop=4.0)
    # 1 original + 4 layers x 4 generations of 3 offspring (pop 5, 2 elites)
    result, algorithm = run(problem, "layerwise_ga", pop_size=5, n_evals=49)
    original = np.ones(problem.n_var, dtype=bool)
    slices = problem.space.group_slices
    assert algorithm.stage == 3
    assert [algorithm.allowed_drop(i) for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
    stage_of = np.minimum(3, np.arange(len(result.archive) - 1) * 4 // 48)
    drop = np.array([100 * (BASE_ACCURACY - e.accuracy) for e in result.archive])
    energy = -scores(result) + np.maximum(0.0, drop - np.array([1.0, 2.0, 3.0, 4.0])[np.r_[0, stage_of]])
    for stage in range(4):
        inside = np.zeros(problem.n_var, dtype=bool)
        inside[slices[stage]] = True
        members = [e for e, s in zip(result.archive[1:], stage_of) if s == stage]
        assert members and any(not np.array_equal(e.genome[inside], original[inside]) for e in members)
        # outside the evolving group, every candidate of a stage equals the best genome before it
        before = np.flatnonzero(np.r_[True, stage_of < stage])
        best = result.archive[int(before[np.argmin(energy[before])])].genome
        if stage:
            assert all(np.array_equal(e.genome[~inside], best[~inside]) for e in members)
    # elitism: the population keeps the lowest-energy individuals seen in the last stage
    assert algorithm.best_energy == pytest.approx(min(algorithm.state_E))


def test_sa_energy_penalises_loss_above_max_loss_and_best_is_lowest_energy():
    best_drop = {}
    for penalty in (0.0, 10.0):
        problem = fake_problem(binary=False, max_accuracy_drop=0.5)
        result, algorithm = run(problem, "sa", pop_size=4, n_gen=40, loss_penalty=penalty)
        assert 0 < algorithm.n_accepted < 4 * 39
        drop = np.array([100 * (BASE_ACCURACY - e.accuracy) for e in result.archive])
        energy = -scores(result) + penalty * np.maximum(0.0, drop - 0.5)
        i = int(np.argmin(energy))
        assert algorithm.best_energy == pytest.approx(energy[i])
        np.testing.assert_array_equal(algorithm.best.X, result.archive[i].genome)
        best_drop[penalty] = drop[i]
    # without the penalty the best trades accuracy for sparsity beyond max_loss; with it, not
    assert best_drop[0.0] > 0.5 >= best_drop[10.0]


# ---------------------------------------------------------------------------- two-step specifics


def test_two_step_reseeds_around_the_elite():
    problem = fake_problem(binary=True, n_groups=8)
    progress = []
    result, algorithm = run(problem, "two_step", pop_size=10, n_gen=8, n_rounds=2, reseed_rate=0.05,
                            callback=lambda a: progress.append((a.termination.perc,
                                                                a.inner_algorithm.termination.perc)))
    assert algorithm.round == 1 and len(algorithm.elites) == 1
    # the inner algorithm's operators see the progress of the whole run, not of the round
    np.testing.assert_allclose([p for p, _ in progress[:-1]], np.arange(1, 8) / 8)
    np.testing.assert_allclose([q for _, q in progress[:-1]], np.arange(1, 8) / 8)
    elite = algorithm.elites[0]
    # 8 generations, 2 rounds: generation 4 is the second round's initial population
    seeded = [e for e in result.archive if e.generation == 4]
    hamming = [np.sum(e.genome != elite) for e in seeded]
    # 9 perturbations of the elite (the elite itself is carried over, not re-evaluated)
    assert len(seeded) == 9
    assert 1 <= min(hamming) and np.mean(hamming) <= 4


def test_two_step_passes_inner_options_through_search():
    """``search(problem, "two_step", ..., **inner_options)`` reaches every round's inner algorithm."""
    result, algorithm = run(fake_problem(binary=True), "two_step", pop_size=6, n_gen=4, crossover="single_point",
                            mutation_rate=0.3)
    mutation = algorithm.inner_algorithm.mating.mutation
    assert result.n_evals > 6 and mutation.rate == 0.3
    assert type(algorithm.inner_algorithm.mating.crossover).__name__ == "BinarySinglePointCrossover"


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name, binary, option, value", [
    ("threshold_ga", True, "threshold", 150.0),
    ("threshold_ga", True, "n_parents", 1),
    ("threshold_ga", True, "mutation_prob", 1.5),
    ("threshold_ga", True, "population_threshold", 0),
    ("genecai", False, "p_cross", 2.0),
    ("genecai", False, "p_swap", -0.5),
    ("genecai", False, "p_tweak", 1.01),
    ("genecai", False, "sigma", 0.0),
    ("genecai", False, "acc_threshold", 101.0),
    ("genecai", False, "initialization", "uniform"),
    ("genecai", False, "bisection_steps", 0),
    ("genecai", False, "cost", "flops"),
    ("sa", True, "initial_temperature", 0.0),
    ("sa", True, "final_temperature", 5.0),
    ("sa", True, "mutation_rate", 0.0),
    ("sa", True, "max_loss", -1.0),
    ("sa", True, "layerwise", "yes"),
    ("layerwise_ga", True, "n_elites", 8),
    ("layerwise_ga", True, "crossover_prob", 1.5),
    ("layerwise_ga", True, "tournament_size", 0),
    ("two_step", True, "n_rounds", 0),
    ("two_step", True, "inner", "cmaes"),
    ("two_step", True, "reseed_rate", 0.0),
])
def test_bad_option_values_name_the_argument(name, binary, option, value):
    with pytest.raises(MopruneValueError) as info:
        ALGORITHMS.get(name)(fake_problem(binary=binary), pop_size=8, **{option: value})
    message = str(info.value)
    assert option in message and repr(value) in message


@pytest.mark.parametrize("name, binary", [("threshold_ga", True), ("genecai", False), ("sa", True),
                                          ("layerwise_ga", True), ("two_step", True)])
def test_unknown_options_raise_type_error_naming_them(name, binary):
    with pytest.raises(TypeError, match="bogus_option"):
        ALGORITHMS.get(name)(fake_problem(binary=binary), pop_size=8, bogus_option=1)


# ---------------------------------------------------------------------------- a real tiny network


def _tiny_mlp():
    """An 8-24-24-3 MLP with fixed random weights; half of each hidden layer is nearly silent.

    The silent units (small weights, so lowest in L1 importance) make part of the network
    prunable without changing its predictions, as in a trained over-parameterised network.
    """
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for layer in (model[0], model[2]):
            layer.weight[12:] *= 0.02
            layer.bias[12:] *= 0.02
    return model.eval()


def _tiny_data(model, n, seed):
    """Gaussian inputs labelled by the model itself (base accuracy 1): no training needed."""
    import torch
    from torch.utils.data import TensorDataset

    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    return TensorDataset(x, y)


@pytest.fixture(scope="module")
def tiny_mlp():
    return _tiny_mlp()


def _real_problem(model, kind, encoding):
    import torch

    from moprune.evaluation import Evaluator
    from moprune.space import ChannelSpace, WeightSpace

    if kind == "channels":
        space = ChannelSpace(model, torch.zeros(1, 8), encoding=encoding)
    else:
        space = WeightSpace(model, torch.zeros(1, 8), encoding=encoding)
    evaluator = Evaluator(_tiny_data(model, 400, seed=2), n_samples=400)
    return PruningProblem(space, evaluator, objectives=("error", "macs"), max_accuracy_drop=5.0)


REAL = [  # (algorithm, space, encoding, n_evals, options)
    ("genecai", "channels", "ratio", 100, {}),
    ("threshold_ga", "channels", "binary", 40, {"n_parents": 4}),
    ("sa", "weights", "mask", 40, {"layerwise": True}),
    ("layerwise_ga", "weights", "mask", 40, {}),
    ("two_step", "channels", "binary", 40, {}),
]


@pytest.mark.parametrize("name, kind, encoding, n_evals, options", REAL, ids=[r[0] for r in REAL])
def test_real_network_budget_determinism_and_progress(tiny_mlp, name, kind, encoding, n_evals, options):
    runs, skips = [], []
    for _ in range(2):
        problem = _real_problem(tiny_mlp, kind, encoding)  # fresh evaluator: no shared cache
        result, algorithm = run(problem, name, pop_size=8, n_evals=n_evals, **options)
        runs.append(result)
        skips.append(getattr(algorithm, "boundary_evals", 0))
    a, b = runs
    assert a.n_evals == n_evals
    assert same_archive(a, b)
    assert a.base_accuracy == 1.0  # labels come from the network itself
    acc = np.array([e.accuracy for e in a.archive])
    assert np.all((acc >= 0) & (acc <= 1))
    if a.objectives[-1] == "neg_score":
        s = scores(a)[skips[0]:]
        gen = np.array([e.generation for e in a.archive])[skips[0]:]
        assert s[gen > 0].max() > s[gen == 0].max()
    else:
        macs = np.array([e.macs_ratio for e in a.archive if e.feasible])
        assert macs.min() < 1.0
