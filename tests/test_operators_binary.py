"""Binary operators: samplings, adaptive bit-flip, uniform and single-point crossover."""

from types import SimpleNamespace

import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.core.problem import Problem

from conftest_search import H1, tiny_problem
from moprune.exceptions import ConflictingArgumentsError, MopruneValueError
from moprune.operators import (
    AdaptiveBitflipMutation,
    BinaryRandomSampling,
    BinarySinglePointCrossover,
    BinaryUniformCrossover,
    NearOriginalSampling,
    default_operators,
)

PROBLEM = Problem(n_var=100, n_obj=1, xl=0, xu=1, vtype=bool)


def rng(seed=0):
    return np.random.default_rng(seed)


def _algorithm(perc):
    return SimpleNamespace(termination=SimpleNamespace(perc=perc))


def test_near_original_sampling_keeps_most_bits():
    X = NearOriginalSampling(keep_prob=0.9).do(PROBLEM, 200, random_state=rng()).get("X")
    assert X.shape == (200, 100) and X.dtype == bool
    assert X.mean() == pytest.approx(0.9, abs=0.01)
    X0 = NearOriginalSampling(keep_prob=0.5, include_original=True).do(PROBLEM, 5, random_state=rng()).get("X")
    assert X0[0].all() and 0.3 < X0[1:].mean() < 0.7


def test_near_original_sampling_uses_the_space_original():
    problem = tiny_problem()
    X = NearOriginalSampling(keep_prob=1.0).do(problem, 3, random_state=rng()).get("X")
    assert X.all() and X.shape == (3, problem.n_var)


def test_random_sampling_spans_all_densities():
    X = BinaryRandomSampling().do(PROBLEM, 400, random_state=rng()).get("X")
    density = X.mean(axis=1)
    assert density.min() < 0.05 and density.max() > 0.95 and density.std() > 0.25
    fixed = BinaryRandomSampling(keep_prob=0.3).do(PROBLEM, 400, random_state=rng()).get("X")
    assert fixed.mean() == pytest.approx(0.3, abs=0.01) and fixed.mean(axis=1).std() < 0.1
    band = BinaryRandomSampling(min_keep=0.6, max_keep=0.8).do(PROBLEM, 400, random_state=rng()).get("X")
    assert band.mean() == pytest.approx(0.7, abs=0.01) and 0.45 < band.mean(axis=1).min()
    assert band.mean(axis=1).max() < 0.95


def test_samplings_are_deterministic_under_the_generator():
    for op in (NearOriginalSampling(), BinaryRandomSampling()):
        a = op.do(PROBLEM, 10, random_state=rng(3)).get("X")
        b = op.do(PROBLEM, 10, random_state=rng(3)).get("X")
        c = op.do(PROBLEM, 10, random_state=rng(4)).get("X")
        assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_adaptive_rate_schedule():
    m = AdaptiveBitflipMutation()
    assert m.current_rate(100, 0.0) == pytest.approx(0.02)
    assert m.current_rate(100, 1.0) == pytest.approx(0.005)
    assert m.current_rate(100, 0.5) == pytest.approx(0.01)  # geometric midpoint
    lin = AdaptiveBitflipMutation(rate=0.15, final_rate=0.05, schedule="linear")
    assert lin.current_rate(10, 0.5) == pytest.approx(0.10)
    assert AdaptiveBitflipMutation(rate=0.2, schedule="constant").current_rate(10, 0.9) == 0.2


def test_adaptive_mutation_flips_at_the_current_rate():
    m = AdaptiveBitflipMutation(rate=0.2, final_rate=0.02)
    X = np.zeros((400, 100), dtype=bool)
    early = m._do(PROBLEM, X, random_state=rng(), algorithm=_algorithm(0.0))
    late = m._do(PROBLEM, X, random_state=rng(), algorithm=_algorithm(1.0))
    assert early.mean() == pytest.approx(0.2, abs=0.01)
    assert late.mean() == pytest.approx(0.02, abs=0.003)
    assert early.dtype == bool and not X.any()  # the input is not modified
    # without an algorithm (or a termination), the initial rate is used
    assert m._do(PROBLEM, X, random_state=rng()).mean() == pytest.approx(0.2, abs=0.01)
    ones = m._do(PROBLEM, ~X, random_state=rng(), algorithm=_algorithm(0.0))
    assert (~ones).mean() == pytest.approx(0.2, abs=0.01)


def test_mutation_through_pymoo_do():
    pop = Population.new("X", np.ones((50, 100), dtype=bool))
    off = AdaptiveBitflipMutation(rate=0.1).do(PROBLEM, pop, random_state=rng(), algorithm=_algorithm(0.0))
    assert (~off.get("X")).mean() == pytest.approx(0.1, abs=0.015)


def _parents(n_matings=300, n_var=100):
    r = rng(7)
    return r.random((2, n_matings, n_var)) < 0.5


def test_uniform_crossover_swaps_half_the_genes():
    X = _parents()
    Y = BinaryUniformCrossover()._do(PROBLEM, X, random_state=rng())
    assert Y.shape == X.shape and Y.dtype == bool
    # every gene of a pair comes from one parent, the sibling has the other one
    assert np.array_equal(Y[0] ^ Y[1], X[0] ^ X[1]) and np.array_equal(Y[0] & Y[1], X[0] & X[1])
    differ = X[0] != X[1]
    assert (Y[0] != X[0])[differ].mean() == pytest.approx(0.5, abs=0.02)
    Z = BinaryUniformCrossover(swap_prob=0.1)._do(PROBLEM, X, random_state=rng())
    assert (Z[0] != X[0])[differ].mean() == pytest.approx(0.1, abs=0.01)


def test_single_point_crossover_exchanges_one_tail():
    X = _parents()
    Y = BinarySinglePointCrossover()._do(PROBLEM, X, random_state=rng())
    n_var = X.shape[2]
    cuts = []
    for i in range(X.shape[1]):
        a, b = X[0, i], X[1, i]
        found = [c for c in range(1, n_var)
                 if np.array_equal(Y[0, i], np.r_[a[:c], b[c:]]) and np.array_equal(Y[1, i], np.r_[b[:c], a[c:]])]
        assert found, f"mating {i} is not a single-point crossover"
        cuts.append(found[0])
    assert min(cuts) >= 1 and max(cuts) <= n_var - 1 and len(set(cuts)) > 30


def test_crossover_probability_through_pymoo_do():
    X = _parents(200, 20)
    pop = Population.new("X", np.vstack([X[0], X[1]]))
    parents = np.column_stack([np.arange(200), np.arange(200, 400)])
    off = BinaryUniformCrossover(prob=0.0).do(Problem(n_var=20, n_obj=1, xl=0, xu=1), pop, parents,
                                               random_state=rng())
    Xo = off.get("X")
    assert len(off) == 400 and np.array_equal(np.sort(Xo, axis=0), np.sort(np.vstack([X[0], X[1]]), axis=0))


def test_crossovers_are_deterministic():
    X = _parents(20, 30)
    for op in (BinaryUniformCrossover(), BinarySinglePointCrossover()):
        assert np.array_equal(op._do(PROBLEM, X, random_state=rng(1)), op._do(PROBLEM, X, random_state=rng(1)))


@pytest.mark.parametrize("factory, name, value", [
    (lambda: NearOriginalSampling(keep_prob=1.2), "keep_prob", "1.2"),
    (lambda: BinaryRandomSampling(keep_prob=-0.1), "keep_prob", "-0.1"),
    (lambda: AdaptiveBitflipMutation(rate=0.0), "rate", "0.0"),
    (lambda: AdaptiveBitflipMutation(schedule="cosine"), "schedule", "'cosine'"),
    (lambda: BinaryUniformCrossover(swap_prob=2), "swap_prob", "2"),
    (lambda: BinarySinglePointCrossover(prob="high"), "prob", "'high'"),
])
def test_bad_arguments_are_refused(factory, name, value):
    with pytest.raises(MopruneValueError) as info:
        factory()
    message = str(info.value)
    assert message.startswith(f"{name} must be") and message.endswith(f"got {value}")


def test_conflicting_keep_bounds_name_both():
    with pytest.raises(ConflictingArgumentsError) as info:
        BinaryRandomSampling(min_keep=0.9, max_keep=0.1)
    assert str(info.value) == "min_keep, max_keep must be min_keep <= max_keep; got (0.9, 0.1)"


def test_default_operators_and_their_names():
    problem = tiny_problem()
    ops = default_operators(problem.space, sampling="near_original", crossover="single_point")
    assert isinstance(ops["sampling"], NearOriginalSampling) and ops["sampling"].keep_prob == 0.9
    assert isinstance(ops["crossover"], BinarySinglePointCrossover)
    assert isinstance(ops["mutation"], AdaptiveBitflipMutation)
    X = np.zeros((2, problem.n_var), dtype=bool)
    repaired = ops["repair"]._do(problem, X)
    assert repaired[:, :H1].any(axis=1).all() and repaired[:, H1:].any(axis=1).all()
    with pytest.raises(MopruneValueError, match=r"crossover must be one of \['uniform', 'single_point'\]"):
        default_operators(problem.space, crossover="sbx")
    with pytest.raises(MopruneValueError, match="sampling must be one of"):
        default_operators(problem.space, sampling="sobol")
