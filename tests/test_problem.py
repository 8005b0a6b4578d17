"""PruningProblem (objectives, constraint, archive, failures, scalarized view) and the scores."""

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest_search import H1, H2, TinySpace, make_data, random_genomes, tiny_model, tiny_problem
from moprune.evaluation import Evaluator
from moprune.exceptions import MopruneError, MopruneValueError
from moprune.problem import OBJECTIVES, PruningProblem
from moprune.scoring import SCORINGS, GeneCAIScore, Scoring, ThresholdScore, WeightedScore, make_scoring
from moprune.train import evaluate

_genomes = random_genomes


# ---------------------------------------------------------------- problem
class RebasableSpace(TinySpace):
    """TinySpace whose rebase records its arguments and returns a space over the given model."""

    def rebase(self, model, plan):
        space = RebasableSpace(model)
        space.rebased_from = (self, plan)
        return space


def test_latest_evaluations_and_as_genomes():
    problem = tiny_problem()
    X = _genomes(n=3)
    problem.evaluate(X.astype(float))  # floats come back as the space's bools
    problem.evaluate(X[:1])
    latest = problem.latest_evaluations(np.vstack([X, ~X[:1]]))
    assert latest[0] is problem.archive[3] and latest[1] is problem.archive[1] and latest[3] is None
    assert problem.as_genomes(X[0]).shape == (1, H1 + H2) and problem.as_genomes(X[0]).dtype == bool
    assert problem.scalarized("weighted").latest_evaluations(X[2])[0] is problem.archive[2]


def test_rebase_swaps_the_space_and_drops_the_stale_cache():
    space = RebasableSpace(tiny_model())
    problem = PruningProblem(space, Evaluator(make_data(200, seed=2), n_samples=None, num_threads=1))
    x = _genomes(n=1)
    problem.evaluate(x)
    assert len(problem.evaluator.cache) == 1
    model = space.materialize(x[0])
    new = problem.scalarized("weighted").rebase(model, space.decode(x[0]))  # a view rebases its parent
    assert problem.space is new and new.model is model and new.rebased_from[0] is space
    assert len(problem.evaluator.cache) == 0
    problem.evaluate(x)
    kept = problem.rebase(model, space.decode(x[0]), drop_cache=False)
    assert problem.space is kept and len(problem.evaluator.cache) == 1


def _costs(e, objectives):
    """An archive entry's cost objectives, all minimised."""
    values = {"macs": e.macs_ratio, "params": e.params_ratio, "sparsity": -e.sparsity}
    return tuple(values[o] for o in objectives if o != "error")


def _front(archive, objectives):
    """Plan keys, exact errors and costs of the non-dominated unscreened candidates of an archive."""
    points = {(e.plan_key, 1 - e.accuracy) + _costs(e, objectives) for e in archive if not e.screened}
    return {p for p in points
            if not any(all(a <= b for a, b in zip(q[1:], p[1:])) and q[1:] != p[1:] for q in points)}


@pytest.mark.parametrize("objectives", [("error", "macs"), ("error", "macs", "params"), ("error", "sparsity")])
def test_screening_stops_dominated_candidates_and_keeps_the_front(objectives):
    plain, screening = tiny_problem(objectives=objectives), tiny_problem(objectives=objectives)
    screening.screen = True
    n = len(screening.evaluator.val_subset)
    for generation, seed in enumerate(range(4)):
        X = _genomes(seed, n=12)
        for problem in (plain, screening):
            problem.generation = generation
            problem.evaluate(X)
    assert screening.evaluator.images_ranked and not plain.evaluator.images_ranked
    screened = [(i, e) for i, e in enumerate(screening.archive) if e.screened]
    assert len(screened) >= 5
    assert _front(screening.archive, objectives) == _front(plain.archive, objectives)
    for i, e in screened:
        true = plain.archive[i]
        assert true.plan_key == e.plan_key and not true.screened
        assert e.accuracy >= true.accuracy  # an upper bound of the accuracy measured in full
        # dominated by an earlier, fully measured candidate at most as costly in every cost objective
        assert any(not d.screened and d.generation < e.generation
                   and all(a <= b for a, b in zip(_costs(d, objectives), _costs(e, objectives)))
                   and round((1 - d.accuracy) * n) < round((1 - e.accuracy) * n) for d in screening.archive)
    unscreened = [i for i, e in enumerate(screening.archive) if not e.screened]
    np.testing.assert_allclose([screening.archive[i].accuracy for i in unscreened],
                               [plain.archive[i].accuracy for i in unscreened], atol=1e-12)


def test_screening_needs_an_evaluator_that_takes_bounds():
    class OwnEvaluator(Evaluator):  # a user's evaluator with the older signature
        def evaluate(self, space, X):
            return super().evaluate(space, X)

    problem = tiny_problem()
    problem.evaluator.__class__ = OwnEvaluator
    problem.screen = True
    for generation, seed in enumerate(range(3)):
        problem.generation = generation
        problem.evaluate(_genomes(seed, n=12))
    assert len(problem.archive) == 36 and not any(e.screened for e in problem.archive)


def test_screening_ignores_candidates_measured_before_a_rebase():
    problem = tiny_problem()
    problem.space = RebasableSpace(tiny_model())
    problem.screen = True
    problem.evaluate(_genomes(0, n=12))
    cost = problem.space.cost(_genomes(1, n=4))
    assert any(b is not None for b in problem.error_bounds(cost))
    problem.rebase(tiny_model(), _genomes(0, n=1)[0])
    assert problem.error_bounds(cost) == [None] * 4
    assert tiny_problem(objectives=("macs", "params")).error_bounds(cost) is None  # no error objective


def test_problem_matches_space_and_evaluator():
    problem = tiny_problem(objectives=("error", "macs", "params", "sparsity"))
    assert problem.n_var == H1 + H2 and problem.n_obj == 4 and problem.n_ieq_constr == 0
    assert problem.vtype is bool
    X = _genomes()
    out = problem.evaluate(X, return_as_dictionary=True)
    F = out["F"]
    assert F.shape == (6, 4)
    cost = problem.space.cost(X)
    val = problem.evaluator.val_subset
    for i, x in enumerate(X):
        acc = evaluate(problem.space.materialize(x), val)
        assert F[i, 0] == pytest.approx(1.0 - acc, abs=1e-12)
    np.testing.assert_allclose(F[:, 1], cost["macs_ratio"])
    np.testing.assert_allclose(F[:, 2], cost["params_ratio"])
    np.testing.assert_allclose(F[:, 3], 1.0 - cost["sparsity"])
    # the unpruned genome: base accuracy and ratios of 1
    assert F[0, 0] == pytest.approx(1.0 - problem.base_accuracy)
    assert F[0, 1] == F[0, 2] == 1.0 and F[0, 3] == 1.0
    assert len(problem.archive) == 6
    e = problem.archive[3]
    assert e.objectives == tuple(F[3]) and e.accuracy == pytest.approx(1.0 - F[3, 0])
    assert e.macs == cost["macs"][3] and e.summary["kept/hidden1"] == int(X[3, :H1].sum())
    assert e.plan_key == problem.space.decode(X[3]).key and e.feasible and e.error is None


def test_archive_order_generation_and_cache_flags():
    problem = tiny_problem()
    X = _genomes(n=4)
    problem.evaluate(X)
    problem.generation = 1
    problem.evaluate(X[::-1])
    assert len(problem.archive) == 8
    assert [e.generation for e in problem.archive] == [0] * 4 + [1] * 4
    assert [e.cached for e in problem.archive] == [False] * 4 + [True] * 4
    assert [e.plan_key for e in problem.archive[4:]] == [e.plan_key for e in problem.archive[3::-1]]
    assert all(e.seconds == 0.0 for e in problem.archive[4:])
    assert problem.evaluator.n_evaluated == 4 and problem.evaluator.n_cached == 4


def test_constraint_is_drop_minus_threshold():
    problem = tiny_problem(max_accuracy_drop=5.0)
    assert problem.n_ieq_constr == 1
    X = _genomes(seed=3, n=8)
    out = problem.evaluate(X, return_as_dictionary=True)
    drop = 100.0 * (problem.base_accuracy - (1.0 - out["F"][:, 0]))
    np.testing.assert_allclose(out["G"][:, 0], drop - 5.0)
    assert [e.feasible for e in problem.archive] == list(out["G"][:, 0] <= 0)
    assert out["G"][0, 0] == pytest.approx(-5.0)  # the unpruned model drops nothing


def test_failed_candidate_gets_worst_values_and_error():
    space = TinySpace(tiny_model(), fail_if=lambda plan: len(plan.kept[0][1]) == 3)
    evaluator = Evaluator(make_data(300, seed=2), n_samples=None, num_threads=1)
    problem = PruningProblem(space, evaluator, objectives=("error", "macs", "sparsity"), max_accuracy_drop=2)
    X = np.ones((3, H1 + H2), dtype=bool)
    X[1, 3:H1] = False  # 3 units kept in hidden1: fails
    X[2, 5:H1] = False
    out = problem.evaluate(X, return_as_dictionary=True)
    np.testing.assert_allclose(out["F"][1], [1.0, 1.0, 1.0])
    assert out["G"][1, 0] == pytest.approx(100.0 * problem.base_accuracy - 2.0)
    bad = problem.archive[1]
    assert "materialize failed on purpose" in bad.error and math.isnan(bad.accuracy) and not bad.feasible
    assert problem.archive[2].error is None and problem.archive[2].accuracy > 0.2
    assert evaluator.n_failed == 1


@pytest.mark.parametrize("objectives", [("error", "latency"), (), ("error", "error"), "accuracy", 3])
def test_bad_objectives_are_refused(objectives):
    with pytest.raises(MopruneValueError) as info:
        tiny_problem(objectives=objectives)
    message = str(info.value)
    assert message.startswith("objectives must be") and "'sparsity'" in message and repr(objectives) in message


@pytest.mark.parametrize("drop", [-1, 100.5, "2", True])
def test_bad_threshold_is_refused(drop):
    message = r"max_accuracy_drop must be None or a real number in \[0, 100\] \(accuracy points\); got"
    with pytest.raises(MopruneValueError, match=message):
        tiny_problem(max_accuracy_drop=drop)


def test_objective_names():
    assert OBJECTIVES == ("error", "macs", "params", "sparsity")


def test_scalarized_view_shares_state_and_minimises_negative_score():
    problem = tiny_problem(max_accuracy_drop=3.0)
    view = problem.scalarized("weighted", w_acc=1.0, w_macs=0.5)
    assert view.n_obj == 1 and view.n_ieq_constr == 1 and view.space is problem.space
    assert view.evaluator is problem.evaluator and view.objectives == ("neg_score",)
    assert view.result_objectives == ("error", "macs", "neg_score")
    X = _genomes(n=5)
    out = view.evaluate(X, return_as_dictionary=True)
    acc = 1.0 - np.array([e.objectives[0] for e in problem.archive])
    macs = np.array([e.objectives[1] for e in problem.archive])
    np.testing.assert_allclose(out["F"][:, 0], -(acc + 0.5 * (1.0 - macs)))
    np.testing.assert_allclose([e.objectives[2] for e in problem.archive], out["F"][:, 0])
    assert len(problem.archive) == 5 and view.archive is problem.archive
    view.generation = 4
    assert problem.generation == 4
    assert view.base_accuracy == problem.base_accuracy
    assert out["G"].shape == (5, 1)


def test_pickling_leaves_the_data_out():
    problem = tiny_problem()
    problem.evaluate(_genomes(n=3))
    clone = pickle.loads(pickle.dumps(problem))
    assert clone.evaluator._val is None and len(clone.evaluator.cache) == 3
    assert len(clone.archive) == 3 and clone.base_accuracy == problem.base_accuracy
    x = _genomes(seed=9, n=2)[1:]
    with pytest.raises(MopruneError, match="attach_data"):
        clone.evaluator.evaluate(clone.space, x)
    # cached plans need no data
    assert clone.evaluator.evaluate(clone.space, _genomes(n=3))[2].cached
    clone.evaluator.attach_data(make_data(300, seed=2))
    assert clone.evaluator.evaluate(clone.space, x)[0].accuracy == problem.evaluator.evaluate(problem.space, x)[0].accuracy


# ---------------------------------------------------------------- scores
def test_weighted_score_is_equation_1():
    score = WeightedScore(w_acc=2.0, w_macs=0.5)
    s = score(np.array([0.9, 0.5]), np.array([0.4, 1.0]), [0.3, 0.3], [0.1, 0.1], 0.95)
    np.testing.assert_allclose(s, [2 * 0.9 + 0.5 * 0.6, 2 * 0.5])
    assert WeightedScore(w_acc=0, w_macs=0, w_params=1)(0.5, 0.5, 0.25, 0, 1)[0] == pytest.approx(0.75)


@pytest.mark.parametrize("kwargs, name", [({"w_acc": -1.0}, "w_acc"), ({"w_macs": -0.1}, "w_macs"),
                                          ({"w_macs": float("nan")}, "w_macs"), ({"w_acc": "1"}, "w_acc")])
def test_weighted_score_refuses_bad_weights(kwargs, name):
    with pytest.raises(MopruneValueError) as info:
        WeightedScore(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{name} must be a finite real number >= 0; got") and repr(list(kwargs.values())[0]) in message


def test_weighted_score_refuses_all_zero():
    with pytest.raises(MopruneValueError, match=r"weights not all zero; got \(0, 0, 0.0, 0.0\)"):
        WeightedScore(w_acc=0, w_macs=0)


def test_threshold_score_is_algorithm_1():
    score = ThresholdScore(threshold=2.0, epsilon=10.0, lam=0.5)
    # drops of 1 and 5 points, half the parameters gone
    s = score(np.array([0.89, 0.85]), 0.7, 0.5, 0.0, 0.90)
    np.testing.assert_allclose(s, [50.0, 50.0 / 15.0 - 2.5])
    # accuracy above the base: negative drop, still inside
    assert score(0.95, 1.0, 0.2, 0, 0.9)[0] == pytest.approx(80.0)
    assert ThresholdScore(threshold=2, cost="macs")(0.9, 0.25, 1.0, 0, 0.9)[0] == pytest.approx(75.0)


@pytest.mark.parametrize("kwargs, name, allowed", [
    ({"threshold": 101}, "threshold", "[0.0, 100.0]"), ({"threshold": -0.5}, "threshold", "[0.0, 100.0]"),
    ({"lam": 1.5}, "lam", "[0.0, 1.0]"), ({"epsilon": 0}, "epsilon", "a finite real number > 0"),
    ({"cost": "flops"}, "cost", "['macs', 'params']")])
def test_threshold_score_refuses_bad_arguments(kwargs, name, allowed):
    with pytest.raises(MopruneValueError) as info:
        ThresholdScore(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{name} must be") and allowed in message
    assert f"got {list(kwargs.values())[0]!r}" in message or f"got {float(list(kwargs.values())[0])!r}" in message


def test_genecai_score_is_equation_9_with_penalty_7():
    score = GeneCAIScore(acc_threshold=80.0)
    base = 0.935
    s = score(np.array([0.90, 0.70]), np.array([0.5, 0.2]), 1.0, 0.0, base)
    expected_in = math.exp(0.5) / 3.5
    expected_out = math.exp(0.8) / (23.5 + math.exp(10.0))
    np.testing.assert_allclose(s, [expected_in, expected_out], rtol=1e-12)
    # no accuracy drop: the penalty is floored at min_penalty points
    assert score(0.95, 0.5, 1, 0, base)[0] == pytest.approx(math.exp(0.5) / 0.1)
    # monotone: less accuracy, lower score; fewer MACs, higher score
    assert score(0.91, 0.5, 1, 0, base)[0] > score(0.90, 0.5, 1, 0, base)[0]
    assert score(0.90, 0.4, 1, 0, base)[0] > score(0.90, 0.5, 1, 0, base)[0]


def test_genecai_score_refuses_bad_arguments():
    with pytest.raises(MopruneValueError, match=r"acc_threshold must be a real number in \[0.0, 100.0\]; got 120"):
        GeneCAIScore(acc_threshold=120)
    with pytest.raises(MopruneValueError, match="min_penalty"):
        GeneCAIScore(min_penalty=0)


def test_make_scoring_resolves_names_and_lists_choices():
    assert SCORINGS.names() == ["genecai", "threshold", "weighted"]
    assert isinstance(make_scoring("threshold", threshold=1.0), ThresholdScore)
    s = WeightedScore()
    assert make_scoring(s) is s
    with pytest.raises(TypeError, match="w_acc"):
        make_scoring(s, w_acc=1)
    with pytest.raises(MopruneValueError, match="unknown scoring 'pareto'; choose one of: genecai, threshold, weighted"):
        make_scoring("pareto")
    with pytest.raises(TypeError, match="w_flops"):
        make_scoring("weighted", w_flops=1)
    assert isinstance(s, Scoring)


_fraction = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(_fraction, _fraction, _fraction, _fraction), min_size=1, max_size=8), base=_fraction)
def test_scores_are_vectorised_elementwise(rows, base):
    acc, macs, params, sparsity = (np.array(c) for c in zip(*rows))
    for score in (WeightedScore(w_acc=1.0, w_macs=0.3, w_params=0.2), ThresholdScore(threshold=2.0),
                  GeneCAIScore(acc_threshold=50.0)):
        together = score(acc, macs, params, sparsity, base)
        alone = [score(a, m, p, s, base)[0] for a, m, p, s in rows]
        assert together.shape == (len(rows),) and np.all(np.isfinite(together))
        np.testing.assert_allclose(together, alone, rtol=1e-12)
        # fewer MACs/params never lowers a score
        assert np.all(score(acc, macs * 0.5, params * 0.5, sparsity, base) >= together - 1e-12)
