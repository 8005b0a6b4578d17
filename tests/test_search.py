"""search(): every registered algorithm end to end, budgets, reproducibility, NSGA-II vs random."""

import numpy as np
import pytest
from pymoo.indicators.hv import HV

from conftest_search import H1, H2, TinySpace, make_data, tiny_model, tiny_problem
from moprune.algorithms import ALGORITHMS
from moprune.archive import SearchResult
from moprune.evaluation import Evaluator
from moprune.exceptions import ConflictingArgumentsError, MopruneValueError
from moprune.problem import PruningProblem
from moprune.searching import search

CORE = ("ga", "nsga2", "random")


def _problem_for(name, **kwargs):
    """A tiny binary problem, or its ratio-encoded twin for algorithms that need real genes."""
    problem = tiny_problem(**kwargs)
    try:
        ALGORITHMS.get(name)(problem, pop_size=8)
    except MopruneValueError:
        problem = tiny_problem(ratio=True, **kwargs)
    return problem


def _fingerprint(result):
    return [(e.genome.tobytes(), e.plan_key, e.objectives, e.accuracy, e.macs, e.params, e.sparsity,
             e.feasible, e.generation, e.cached, e.error) for e in result.archive]


def test_core_algorithms_are_registered():
    assert set(CORE) <= set(ALGORITHMS.names())


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_same_seed_same_archive(name):
    runs = [search(_problem_for(name), name, pop_size=8, n_evals=40, seed=seed) for seed in (3, 3, 4)]
    assert _fingerprint(runs[0]) == _fingerprint(runs[1])
    assert _fingerprint(runs[0]) != _fingerprint(runs[2])
    assert all(len(r.archive) == 40 for r in runs)


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_respects_an_evaluation_budget(name):
    problem = _problem_for(name)
    result = search(problem, name, pop_size=10, n_evals=37, seed=0)
    assert isinstance(result, SearchResult) and result.algorithm == name and result.seed == 0
    assert result.n_evals == 37 and len(problem.archive) == 37
    ev = problem.evaluator
    assert ev.n_evaluated + ev.n_cached == 37
    assert sum(e.cached for e in result.archive) == ev.n_cached
    assert len({e.plan_key for e in result.archive}) == ev.n_evaluated
    assert result.base_accuracy == problem.base_accuracy > 0.5
    assert result.base_macs == problem.space.base_macs and result.space is problem.space
    assert result.pymoo_result is not None
    assert all(len(e.objectives) == len(result.objectives) for e in result.archive)
    assert result.objectives[:2] == ("error", "macs")
    gens = [e.generation for e in result.archive]
    assert gens == sorted(gens) and gens[0] == 0


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_respects_a_generation_budget(name):
    problem = _problem_for(name)
    result = search(problem, name, pop_size=6, n_gen=3, seed=1)
    gens = [e.generation for e in result.archive]
    assert 0 < len(gens) and max(gens) <= 2


SINGLE_OBJECTIVE = ("threshold_ga", "sa", "genecai", "ga", "random")
"""Algorithms that take a ``scoring`` option (a registry name or a :class:`moprune.scoring.Scoring`)."""


def _scorings():
    from moprune.scoring import SCORINGS, WeightedScore

    return [(n, n) for n in SCORINGS.names()] + [("instance", WeightedScore(w_acc=1.0, w_macs=0.25))]


@pytest.mark.parametrize("label, scoring", _scorings(), ids=[label for label, _ in _scorings()])
@pytest.mark.parametrize("name", SINGLE_OBJECTIVE)
def test_every_single_objective_algorithm_accepts_every_scoring(name, label, scoring):
    from moprune.scoring import make_scoring

    assert name in ALGORITHMS.names()
    problem = _problem_for(name)
    result = search(problem, name, pop_size=6, n_evals=18, seed=0, scoring=scoring)
    assert result.n_evals == 18 and result.objectives[-1] == "neg_score"
    # the archived -score is the chosen score of each candidate's measurements
    score = make_scoring(scoring) if isinstance(scoring, str) else scoring
    if name == "threshold_ga" and label == "threshold":  # its default threshold: the problem's, else 2 points
        assert score.threshold == 2.0
    expected = score([e.accuracy for e in result.archive], [e.macs_ratio for e in result.archive],
                     [e.params_ratio for e in result.archive], [e.sparsity for e in result.archive],
                     result.base_accuracy)
    np.testing.assert_allclose([-e.objectives[-1] for e in result.archive], expected)


@pytest.mark.parametrize("name, expected", [("nsga2", 20 + 2 * 20), ("ga", 20 + 2 * 19), ("random", 60)])
def test_generation_budget_counts_offspring_only(name, expected):
    """Survivors are never re-evaluated: only the offspring of each generation reach the archive."""
    problem = tiny_problem()
    result = search(problem, name, pop_size=20, n_gen=3, seed=0)
    assert result.n_evals == expected
    assert [sum(e.generation == g for e in result.archive) for g in range(3)] == \
        [20, (expected - 20) // 2, (expected - 20) // 2]


def test_repair_keeps_a_unit_per_group():
    result = search(tiny_problem(), "nsga2", pop_size=20, n_evals=100, seed=0, sampling="random",
                    mutation_rate=0.3)
    G = np.array([e.genome for e in result.archive])
    assert G[:, :H1].any(axis=1).all() and G[:, H1:].any(axis=1).all()


def _hv(result):
    F = np.array([e.objectives[:2] for e in result.archive])
    return HV(ref_point=np.array([1.0, 1.0]))(F)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsga2_beats_random_search_at_equal_budget(seed):
    nsga2 = search(tiny_problem(), "nsga2", pop_size=20, n_evals=300, seed=seed)
    random = search(tiny_problem(), "random", pop_size=20, n_evals=300, seed=seed)
    assert _hv(nsga2) > _hv(random) + 0.005


def test_weighted_ga_best_score_never_decreases():
    best = []
    problem = tiny_problem()
    result = search(problem, "ga", pop_size=12, n_gen=12, seed=0, scoring="weighted",
                    scoring_options={"w_acc": 1.0, "w_macs": 0.5},
                    callbacks=[lambda algorithm, problem: best.append(-algorithm.pop.get("F")[:, 0].min())])
    assert len(best) == 12
    assert all(b2 >= b1 for b1, b2 in zip(best, best[1:]))
    assert best[-1] > best[0]
    assert result.objectives == ("error", "macs", "neg_score")
    scores = [-e.objectives[2] for e in result.archive]
    acc = [1 - e.objectives[0] for e in result.archive]
    np.testing.assert_allclose(scores, np.array(acc) + 0.5 * (1 - np.array([e.macs_ratio for e in result.archive])))
    assert max(scores) == pytest.approx(best[-1])


@pytest.mark.parametrize("scoring, options", [("threshold", {"threshold": 2.0}),
                                              ("genecai", {"acc_threshold": 60.0})])
def test_ga_runs_every_score(scoring, options):
    result = search(tiny_problem(), "ga", pop_size=10, n_gen=4, seed=0, scoring=scoring, scoring_options=options)
    assert result.n_evals == 10 + 3 * 9
    best = min(result.archive, key=lambda e: e.objectives[-1])
    assert best.macs_ratio < 1.0


def test_constrained_search_reports_feasibility():
    problem = tiny_problem(max_accuracy_drop=2.0)
    result = search(problem, "nsga2", pop_size=12, n_evals=60, seed=0)
    assert result.max_accuracy_drop == 2.0
    for e in result.archive:
        assert e.feasible == (100 * (result.base_accuracy - e.accuracy) <= 2.0)
    assert any(e.feasible for e in result.archive) and not all(e.feasible for e in result.archive)
    opt = result.pymoo_result.opt
    assert (opt.get("G")[:, 0] <= 0).all()


def test_failures_do_not_stop_the_search():
    space = TinySpace(tiny_model(), fail_if=lambda plan: len(plan.kept[0][1]) % 5 == 0)
    problem = PruningProblem(space, Evaluator(make_data(300, seed=2), n_samples=None, num_threads=1))
    result = search(problem, "nsga2", pop_size=10, n_evals=50, seed=0)
    failed = [e for e in result.archive if e.error is not None]
    assert result.n_evals == 50 and failed and len(failed) < 50
    assert all(e.objectives == (1.0, 1.0) and not e.feasible for e in failed)


def test_a_second_run_on_the_same_problem_is_served_from_the_cache():
    problem = tiny_problem()
    first = search(problem, "nsga2", pop_size=10, n_evals=30, seed=0)
    n_evaluated = problem.evaluator.n_evaluated
    second = search(problem, "nsga2", pop_size=10, n_evals=30, seed=0)
    assert len(first.archive) == len(second.archive) == 30 and first.archive is not second.archive
    assert all(e.cached for e in second.archive) and problem.evaluator.n_evaluated == n_evaluated
    assert [e.objectives for e in first.archive] == [e.objectives for e in second.archive]


def test_options_reach_the_factory():
    result = search(tiny_problem(), "nsga2", pop_size=10, n_evals=10, seed=0, sampling="near_original",
                    keep_prob=0.95)
    density = np.mean([e.genome.mean() for e in result.archive])
    assert density == pytest.approx(0.95, abs=0.03)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"algorithm": "cmaes", "n_gen": 2}, MopruneValueError, "unknown algorithm 'cmaes'; choose one of: "),
    ({"n_gen": 2, "n_evals": 10}, ConflictingArgumentsError,
     "n_gen, n_evals must be exactly one of them set; got (2, 10)"),
    ({}, ConflictingArgumentsError, "exactly one of them set; got (None, None)"),
    ({"n_gen": 0}, MopruneValueError, "n_gen must be an int >= 1; got 0"),
    ({"n_evals": 2.5}, MopruneValueError, "n_evals must be an int >= 1; got 2.5"),
    ({"n_gen": 2, "pop_size": 0}, MopruneValueError, "pop_size must be an int >= 2; got 0"),
    ({"n_gen": 2, "pop_size": 1}, MopruneValueError, "pop_size must be an int >= 2; got 1"),
    ({"n_gen": 2, "algorithm": "sa", "pop_size": 0}, MopruneValueError, "pop_size must be an int >= 1; got 0"),
    ({"n_gen": 2, "seed": -1}, MopruneValueError, "seed must be an int >= 0; got -1"),
    ({"n_gen": 2, "crossover_rate": 0.5}, TypeError,
     "algorithm 'nsga2' has no option(s) ['crossover_rate']; its options are: crossover, crossover_prob, "),
    ({"n_gen": 2, "algorithm": "ga", "scoring": "weighted", "scoring_options": {"w_acc": -1}},
     MopruneValueError, "w_acc must be a finite real number >= 0; got -1"),
    ({"n_gen": 2, "algorithm": "ga", "n_elites": 10}, MopruneValueError, "n_elites must be None or an int in [0, 9]; got 10"),
])
def test_bad_arguments_are_refused(kwargs, error, message):
    kwargs = {"algorithm": "nsga2", "pop_size": 10, **kwargs}
    with pytest.raises(error) as info:
        search(tiny_problem(), **kwargs)
    assert message in str(info.value)
    if "unknown algorithm" in message:
        for name in CORE:
            assert name in str(info.value)


def test_search_needs_a_pruning_problem():
    with pytest.raises(MopruneValueError, match="problem must be a moprune.PruningProblem; got 'str'"):
        search("problem", n_gen=1)


def test_genomes_are_arrays_of_the_space():
    result = search(tiny_problem(), "random", pop_size=5, n_evals=5, seed=0)
    assert all(e.genome.shape == (H1 + H2,) and e.genome.dtype == bool for e in result.archive)


def test_channel_space_end_to_end_on_mnist_cnn():
    """Integration with the real ChannelSpace: mnist_cnn with random weights, synthetic images."""
    import torch
    from torch.utils.data import TensorDataset

    from moprune.models import get_model
    from moprune.space import ChannelSpace

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = get_model("mnist_cnn").eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(120, 1, 28, 28, generator=g)
    with torch.no_grad():
        labels = model(images).argmax(1)  # the base model is right on every image
    labels[::4] = (labels[::4] + 1) % 10  # ... except on a quarter of them
    results = []
    for _ in range(2):
        space = ChannelSpace(model)
        evaluator = Evaluator(TensorDataset(images, labels), n_samples=None, batch_size=60, num_threads=1)
        problem = PruningProblem(space, evaluator, objectives=("error", "macs", "params"), max_accuracy_drop=10)
        results.append(search(problem, "nsga2", pop_size=8, n_evals=24, seed=0))
    result = results[0]
    assert result.base_accuracy == pytest.approx(0.75)
    assert _fingerprint(result) == _fingerprint(results[1])
    assert result.n_evals == 24 and result.objectives == ("error", "macs", "params")
    X = np.array([e.genome for e in result.archive])
    cost = space.cost(X)
    np.testing.assert_allclose([e.macs_ratio for e in result.archive], cost["macs_ratio"])
    np.testing.assert_allclose([e.objectives[2] for e in result.archive], cost["params_ratio"])
    e = result.archive[-1]
    assert 1.0 - e.objectives[0] == pytest.approx(e.accuracy)
    from moprune.train import evaluate

    assert evaluate(space.materialize(e.genome), TensorDataset(images, labels)) == pytest.approx(e.accuracy)
    assert all(e.error is None for e in result.archive)
    assert all(e.macs_ratio < 1.0 for e in result.archive)


def test_an_algorithm_instance_runs_in_place_once():
    from moprune.algorithms.nsga2 import make_nsga2

    problem = tiny_problem()
    algorithm = make_nsga2(problem, pop_size=10)
    first = search(problem, algorithm, n_evals=20, seed=0)
    second = search(tiny_problem(), "nsga2", pop_size=10, n_evals=20, seed=0)
    assert _fingerprint(first) == _fingerprint(second)
    assert first.algorithm == "NSGA2" and algorithm.problem is problem and len(algorithm.pop) == 10
    assert first.pymoo_result.algorithm is algorithm
    with pytest.raises(MopruneValueError, match="algorithm must be a pymoo Algorithm that has not been run yet"):
        search(problem, algorithm, n_evals=20)
    with pytest.raises(TypeError, match="sampling"):
        search(problem, make_nsga2(problem, pop_size=10), n_evals=20, sampling="random")


@pytest.mark.parametrize("name", CORE)
def test_core_algorithms_on_a_real_valued_space(name):
    problem = tiny_problem(ratio=True)
    result = search(problem, name, pop_size=10, n_evals=30, seed=0)
    G = np.array([e.genome for e in result.archive])
    assert G.shape == (30, 2) and G.dtype == float and (G >= 0).all() and (G <= 1).all()
    assert len({e.plan_key for e in result.archive}) > 10


@pytest.mark.parametrize("budget", [{"n_gen": 5}, {"n_evals": 50}])
def test_mutation_rate_follows_the_run_progress(budget, monkeypatch):
    from moprune.operators import binary

    seen = []
    original = binary.run_progress
    monkeypatch.setattr(binary, "run_progress", lambda algorithm: seen.append(original(algorithm)) or seen[-1])
    search(tiny_problem(), "nsga2", pop_size=10, seed=0, **budget)
    assert sorted(set(np.round(seen, 6))) == [0.2, 0.4, 0.6, 0.8]


def test_progress_bar_changes_nothing():
    quiet = search(tiny_problem(), "nsga2", pop_size=10, n_evals=25, seed=0)
    loud = search(tiny_problem(), "nsga2", pop_size=10, n_evals=25, seed=0, progress=True)
    assert _fingerprint(quiet) == _fingerprint(loud)
