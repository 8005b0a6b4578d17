"""Numerical properties of GeneCAI's operators (document 004, eqs. 10-16)."""

import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from scipy.stats import norm

from moprune.exceptions import MopruneValueError
from moprune.operators.continuous import (
    DirectedSampling,
    DiversityGuidedMutation,
    FitnessProportionateSelection,
    SwapCrossover,
    characterize_boundaries,
    denormalize,
    distance_pairs,
    diversity,
    genecai_distance,
    normalize,
    required_p_mutate,
    selection_probabilities,
)


class Box(Problem):
    """A bare single-objective problem with given bounds (operators only read n_var, xl, xu)."""

    def __init__(self, xl, xu):
        xl, xu = np.asarray(xl, dtype=float), np.asarray(xu, dtype=float)
        super().__init__(n_var=len(xl), n_obj=1, xl=xl, xu=xu, vtype=float)


def scored_population(X, scores):
    pop = Population.new("X", np.asarray(X, dtype=float))
    pop.set("F", -np.asarray(scores, dtype=float).reshape(-1, 1))
    return pop


# ---------------------------------------------------------------------------- equations


def test_eq10_probabilities_exact():
    p = selection_probabilities([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(p, [0.0, 0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(selection_probabilities([2.0, 2.0]), [0.5, 0.5])
    # a failed candidate (nan) counts as the weakest
    np.testing.assert_allclose(selection_probabilities([np.nan, 1.0, 3.0]), [0.0, 0.0, 1.0])


def test_eq11_distance_and_eq12_diversity():
    assert genecai_distance([0.0, 0.0], [3.0, 4.0]) == pytest.approx(5.0 / 2.0)
    assert genecai_distance([0.0, 0.0], [3.0, 4.0], K=64) == pytest.approx(5.0 / (2.0 * 64))
    np.testing.assert_allclose(genecai_distance([0.0, 0.0], [[3.0, 4.0], [0.0, 1.0]]), [2.5, 0.5])
    assert diversity([[0.0, 0.0], [2.0, 0.0]]) == pytest.approx(1.0)
    assert diversity([[0.3, 0.7]] * 5) == 0.0
    X = np.random.default_rng(0).random((50, 6))
    assert diversity(X) == pytest.approx(X.var(axis=0).sum())


def test_eq15_required_p_mutate():
    # (0.02 - 0.01) / (10 * 0.05 * 0.2**2) = 0.5
    assert required_p_mutate(0.01, 0.02, n_var=10, p_tweak=0.05, sigma=0.2) == pytest.approx(0.5)
    assert required_p_mutate(0.03, 0.02, n_var=10, p_tweak=0.05, sigma=0.2) == 0.0
    assert required_p_mutate(0.0, 1.0, n_var=10, p_tweak=0.05, sigma=0.2) == 1.0


def test_normalize_roundtrip_with_general_bounds():
    xl, xu = np.array([0.2, 0.0, 0.5]), np.array([0.8, 1.0, 0.5])
    X = np.array([[0.5, 0.25, 0.5]])
    Z = normalize(X, xl, xu)
    np.testing.assert_allclose(Z, [[0.5, 0.25, 0.0]])
    np.testing.assert_allclose(denormalize(Z, xl, xu), X)


# ---------------------------------------------------------------------------- selection


def test_fitness_proportionate_frequencies_match_eq10():
    problem = Box([0.0] * 3, [1.0] * 3)
    pop = scored_population(np.random.default_rng(1).random((5, 3)), [1.0, 2.0, 3.0, 4.0, 5.0])
    selection = FitnessProportionateSelection(pairing="random")
    idx = selection.do(problem, pop, 20000, 2, to_pop=False, random_state=np.random.default_rng(7))
    assert idx.shape == (20000, 2)
    freq = np.bincount(idx.ravel(), minlength=5) / idx.size
    np.testing.assert_allclose(freq, [0.0, 0.1, 0.2, 0.3, 0.4], atol=0.006)
    assert freq[0] == 0.0  # the weakest is always eliminated


def test_distance_pairs_fittest_with_farthest():
    Z = np.array([[0.5, 0.5], [0.0, 0.0], [0.55, 0.5], [1.0, 1.0], [0.4, 0.5], [0.5, 0.6]])
    fitness = np.array([10.0, 1.0, 9.0, 2.0, 8.0, 7.0])
    pairs = distance_pairs(Z, fitness)
    # 0 (fittest) is equally far (0.707) from 3 and 1: the tie goes to the fitter one, 3;
    # then 2 (fittest left) is farthest from 1 (0.743); 4 and 5 remain
    assert pairs.tolist() == [[0, 3], [2, 1], [4, 5]]


def test_distance_pairs_greedy_rule_on_random_data():
    rng = np.random.default_rng(3)
    Z, fitness = rng.random((11, 4)), rng.random(11)
    pairs = distance_pairs(Z, fitness)
    assert pairs.shape == (6, 2)
    pool = list(np.argsort(-fitness, kind="stable"))
    for a, b in pairs[:5]:
        assert a == pool[0]  # the fittest still available
        rest = pool[1:]
        d = genecai_distance(Z[a], Z[rest])
        assert genecai_distance(Z[a], Z[b]) == pytest.approx(d.max())  # with the farthest
        pool = [i for i in pool if i not in (a, b)]
    assert pairs[5, 0] == pool[0]  # the odd one out still mates


def test_selection_pairs_by_distance():
    problem = Box([0.0] * 2, [1.0] * 2)
    X = np.array([[0.5, 0.5], [0.0, 0.0], [0.9, 0.9], [0.45, 0.5]])
    pop = scored_population(X, [4.0, 2.0, 3.0, 1.0])  # index 3 has probability 0
    selection = FitnessProportionateSelection()
    idx = selection.do(problem, pop, 500, 2, to_pop=False, random_state=np.random.default_rng(0))
    assert 3 not in idx
    f = np.array([4.0, 2.0, 3.0, 1.0])
    # within each pair the first parent is at least as fit as the second
    assert np.all(f[idx[:, 0]] >= f[idx[:, 1]])
    # the fittest (0) is never paired with itself while a different individual was drawn
    assert not np.any((idx[:, 0] == 0) & (idx[:, 1] == 0))


# ---------------------------------------------------------------------------- crossover


def _cross(crossover, Xa, Xb, seed=0):
    problem = Box([0.0] * Xa.shape[1], [1.0] * Xa.shape[1])
    pop = Population.new("X", np.vstack([Xa, Xb]))
    n = len(Xa)
    parents = np.column_stack([np.arange(n), np.arange(n, 2 * n)])
    off = crossover.do(problem, pop, parents=parents, random_state=np.random.default_rng(seed))
    Y = off.get("X")
    return Y[:n], Y[n:]


def test_swap_crossover_swap_rate_and_gene_conservation():
    rng = np.random.default_rng(0)
    A, B = rng.random((200, 50)), rng.random((200, 50))
    c1, c2 = _cross(SwapCrossover(p_cross=1.0, p_swap=0.2), A, B)
    swapped = c1 == B
    assert swapped.mean() == pytest.approx(0.2, abs=0.01)
    # each position keeps both parents' genes
    np.testing.assert_array_equal(np.where(swapped, c2, c1), A)
    np.testing.assert_array_equal(np.where(swapped, c1, c2), B)


def test_swap_crossover_p_cross_zero_copies_parents():
    rng = np.random.default_rng(1)
    A, B = rng.random((20, 5)), rng.random((20, 5))
    c1, c2 = _cross(SwapCrossover(p_cross=0.0, p_swap=1.0), A, B)
    np.testing.assert_array_equal(c1, A)
    np.testing.assert_array_equal(c2, B)


def test_swap_crossover_crossed_fraction():
    rng = np.random.default_rng(2)
    A, B = np.zeros((4000, 20)), np.ones((4000, 20))
    c1, _ = _cross(SwapCrossover(p_cross=0.8, p_swap=0.5), A, B, seed=rng.integers(1 << 30))
    crossed = c1.any(axis=1)
    assert crossed.mean() == pytest.approx(0.8, abs=0.02)


# ---------------------------------------------------------------------------- mutation


def test_mutation_stays_in_bounds_and_rate():
    xl, xu = np.full(8, 0.2), np.full(8, 0.8)
    problem = Box(xl, xu)
    X = np.random.default_rng(0).uniform(0.2, 0.8, size=(3000, 8))
    mutation = DiversityGuidedMutation(p_tweak=0.3, sigma=5.0, p_mutate=0.5, div_threshold=0.0)
    Y = mutation.do(problem, Population.new("X", X.copy()), random_state=np.random.default_rng(1)).get("X")
    assert Y.min() >= 0.2 and Y.max() <= 0.8
    changed = Y != X
    assert changed.mean() == pytest.approx(0.5 * 0.3, abs=0.01)  # p_M = P_mutate * P_tweak
    assert mutation.current_p_mutate == 0.5


def test_mutation_adapts_p_mutate_when_diversity_drops():
    problem = Box([0.0] * 10, [1.0] * 10)
    mutation = DiversityGuidedMutation(p_tweak=0.05, sigma=0.2, p_mutate=0.1, div_threshold=0.01)
    # diverse enough: base P_mutate
    diverse = np.random.default_rng(0).random((100, 10))
    mutation.do(problem, Population.new("X", diverse), random_state=np.random.default_rng(0))
    assert mutation.last_diversity > 0.01 and mutation.current_p_mutate == 0.1
    # collapsed population (div 0.005): eq. 15 -> (0.01 - 0.005) / (10 * 0.05 * 0.04) = 0.25
    collapsed = np.full((100, 10), 0.5)
    collapsed[:50, 0] += np.sqrt(0.02) / 2
    collapsed[50:, 0] -= np.sqrt(0.02) / 2
    mutation.do(problem, Population.new("X", collapsed), random_state=np.random.default_rng(0))
    assert mutation.last_diversity == pytest.approx(0.005)
    assert mutation.current_p_mutate == pytest.approx(0.25)


def test_mutation_restores_diversity_as_eq15_predicts():
    # all individuals identical, far from the bounds: div(C) = 0, threshold 0.004
    d, sigma, p_tweak = 10, 0.1, 0.05
    problem = Box([0.0] * d, [1.0] * d)
    mutation = DiversityGuidedMutation(p_tweak=p_tweak, sigma=sigma, p_mutate=0.0, div_threshold=0.004)
    X = np.full((20000, d), 0.5)
    Y = mutation.do(problem, Population.new("X", X), random_state=np.random.default_rng(3)).get("X")
    expected_p = 0.004 / (d * p_tweak * sigma**2)  # 0.8
    assert mutation.current_p_mutate == pytest.approx(expected_p)
    assert diversity(Y) == pytest.approx(0.004, rel=0.05)


def test_mutation_lazy_threshold_is_half_the_first_diversity():
    problem = Box([0.0] * 4, [1.0] * 4)
    X = np.random.default_rng(0).random((30, 4))
    mutation = DiversityGuidedMutation()
    mutation.do(problem, Population.new("X", X), random_state=np.random.default_rng(0))
    assert mutation.div_threshold == pytest.approx(diversity(X) / 2)


# ---------------------------------------------------------------------------- directed init


def test_directed_sampling_distribution():
    theta = np.array([0.6, 0.2, 0.0])
    problem = Box([0.0] * 3, [1.0] * 3)
    sampling = DirectedSampling(theta=theta, group_slices=[slice(0, 1), slice(1, 2), slice(2, 3)])
    X = sampling.do(problem, 20000, random_state=np.random.default_rng(0)).get("X")
    rate = 1.0 - X
    assert rate.min() >= 0.0
    assert np.all(rate.max(axis=0) <= theta + 1e-12)
    # N(t/2, t/2) clipped to [0, t] is symmetric around t/2
    np.testing.assert_allclose(rate[:, :2].mean(axis=0), theta[:2] / 2, atol=0.005)
    # mass clipped to 0: P(N(t/2, t/2) < 0) = Phi(-1)
    assert np.mean(rate[:, 0] == 0.0) == pytest.approx(norm.cdf(-1.0), abs=0.01)
    assert np.all(X[:, 2] == 1.0)  # theta 0: never pruned


def test_directed_sampling_general_bounds_and_groups():
    problem = Box([0.1] * 4, [0.9] * 4)
    sampling = DirectedSampling(theta=[0.5, 1.0], group_slices=[slice(0, 2), slice(2, 4)])
    X = sampling.do(problem, 1000, random_state=np.random.default_rng(0)).get("X")
    assert X.min() >= 0.1 and X.max() <= 0.9
    assert X[:, :2].min() >= 0.9 - 0.5 * 0.8 - 1e-12


def test_bisection_finds_known_boundary():
    # accuracy of group g pruned at rate p: 0.9 - slope_g * max(0, p - tol_g); threshold 0.85
    tol, slope = np.array([0.1, 0.3, 0.5, 0.9]), np.array([0.5, 1.0, 0.25, 1.0])
    boundary = np.minimum(1.0, tol + 0.05 / slope)  # [0.2, 0.35, 0.7, 0.95]
    calls = []

    def accuracy_of(X):
        calls.append(len(X))
        pruned = 1.0 - X
        return 0.9 - (slope * np.maximum(0.0, pruned - tol)).sum(axis=1)

    theta = characterize_boundaries(accuracy_of, xl=np.zeros(4), xu=np.ones(4),
                                    group_slices=[slice(i, i + 1) for i in range(4)],
                                    accuracy_threshold=0.85, n_steps=8)
    assert calls == [4] * 8  # one batch of one candidate per group per step
    assert np.all(theta <= boundary)
    np.testing.assert_allclose(theta, boundary, atol=2.0**-8)


def test_bisection_single_group_genomes_touch_only_their_group():
    seen = []

    def accuracy_of(X):
        seen.append(X.copy())
        return np.ones(len(X))

    theta = characterize_boundaries(accuracy_of, xl=np.zeros(4), xu=np.ones(4),
                                    group_slices=[slice(0, 2), slice(2, 4)], accuracy_threshold=0.5, n_steps=3)
    np.testing.assert_allclose(theta, [1 - 2.0**-3] * 2)
    first = seen[0]
    np.testing.assert_allclose(first, [[0.5, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5]])


# ---------------------------------------------------------------------------- validation, determinism


@pytest.mark.parametrize("make, name, value", [
    (lambda v: SwapCrossover(p_cross=v), "p_cross", 1.5),
    (lambda v: SwapCrossover(p_swap=v), "p_swap", -0.1),
    (lambda v: DiversityGuidedMutation(p_tweak=v), "p_tweak", 2),
    (lambda v: DiversityGuidedMutation(p_mutate=v), "p_mutate", "high"),
    (lambda v: DiversityGuidedMutation(sigma=v), "sigma", 0.0),
    (lambda v: DiversityGuidedMutation(div_threshold=v), "div_threshold", -1.0),
    (lambda v: FitnessProportionateSelection(pairing=v), "pairing", "nearest"),
    (lambda v: DirectedSampling(theta=v, group_slices=[slice(0, 1)]), "theta", [1.5]),
])
def test_bad_arguments_name_argument_and_value(make, name, value):
    with pytest.raises(MopruneValueError) as info:
        make(value)
    assert name in str(info.value) and repr(value) in str(info.value)


def test_operators_deterministic_under_random_state():
    problem = Box([0.0] * 6, [1.0] * 6)
    X = np.random.default_rng(0).random((12, 6))
    pop = scored_population(X, np.arange(12.0))

    def run(seed):
        rng = np.random.default_rng(seed)
        idx = FitnessProportionateSelection().do(problem, pop, 6, 2, to_pop=False, random_state=rng)
        off = SwapCrossover().do(problem, pop, parents=idx, random_state=rng)
        off = DiversityGuidedMutation(div_threshold=1.0).do(problem, off, random_state=rng)
        return off.get("X")

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))
