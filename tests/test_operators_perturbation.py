"""PerturbationMutation: the one "flip bits, or Gaussian noise scaled to the bounds, clip, repair"."""

import numpy as np
import pytest
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.population import Population
from pymoo.core.problem import Problem

from conftest_search import H1, H2, tiny_problem
from moprune.exceptions import MopruneValueError
from moprune.operators import BinaryRandomSampling, PerturbationMutation
from moprune.searching import search

BITS = Problem(n_var=200, n_obj=1, xl=0, xu=1, vtype=bool)
BOX = Problem(n_var=50, n_obj=1, xl=np.full(50, 2.0), xu=np.full(50, 6.0), vtype=float)


def mutate(mutation, problem, X, seed=0, **kwargs):
    pop = mutation.do(problem, Population.new("X", X), random_state=np.random.default_rng(seed), **kwargs)
    return np.asarray(pop.get("X"))


def test_bits_flip_at_the_rate():
    X = np.ones((100, 200), dtype=bool)
    out = mutate(PerturbationMutation(rate=0.1), BITS, X)
    assert out.dtype == bool and (~out).mean() == pytest.approx(0.1, abs=0.01)
    assert mutate(PerturbationMutation(rate=0.1), BITS, X, seed=0).tolist() == out.tolist()


def test_default_rate_is_one_gene_in_n_var():
    out = mutate(PerturbationMutation(), BITS, np.zeros((400, 200), dtype=bool))
    assert out.sum(axis=1).mean() == pytest.approx(1.0, abs=0.15)


def test_at_least_one_gene_moves_and_only_mutable_genes_move():
    X = np.ones((300, 200), dtype=bool)
    genes = np.zeros(200, dtype=bool)
    genes[50:60] = True
    out = mutate(PerturbationMutation(rate=0.0, at_least_one=True), BITS, X, genes=genes)
    changed = out != X
    assert (changed.sum(axis=1) == 1).all()  # rate 0: exactly the forced gene
    assert not changed[:, ~genes].any() and changed[:, genes].any(axis=0).all()


def test_per_call_rate_overrides_the_constructor():
    X = np.ones((100, 200), dtype=bool)
    out = mutate(PerturbationMutation(rate=0.01), BITS, X, rate=0.5)
    assert (~out).mean() == pytest.approx(0.5, abs=0.02)


def test_prune_only_never_restores_a_unit_or_raises_a_ratio():
    X = np.random.default_rng(1).random((100, 200)) < 0.5
    out = mutate(PerturbationMutation(rate=0.5, prune_only=True), BITS, X)
    assert not (out & ~X).any() and (X & ~out).any()
    R = np.full((100, 50), 5.0)
    out = mutate(PerturbationMutation(rate=0.5, sigma=0.2, prune_only=True), BOX, R)
    assert (out <= 5.0).all() and (out < 5.0).any() and (out >= 2.0).all()


def test_real_genes_get_noise_scaled_to_the_bounds_and_clipped():
    R = np.full((2000, 50), 4.0)
    out = mutate(PerturbationMutation(rate=1.0, sigma=0.1), BOX, R)
    # every gene moves by N(0, 0.1) of the range 4: standard deviation 0.4, rarely clipped
    assert np.std(out - 4.0) == pytest.approx(0.4, rel=0.05)
    wide = mutate(PerturbationMutation(rate=1.0, sigma=2.0), BOX, R)
    assert wide.min() == 2.0 and wide.max() == 6.0  # clipped to [xl, xu]
    still = mutate(PerturbationMutation(rate=0.0), BOX, R)
    np.testing.assert_array_equal(still, R)


def test_the_space_repair_is_applied():
    problem = tiny_problem()
    X = np.zeros((5, problem.n_var), dtype=bool)
    out = mutate(PerturbationMutation(rate=0.0), problem, X)
    assert out[:, :H1].any(axis=1).all() and out[:, H1:].any(axis=1).all()  # at least one unit per layer
    raw = mutate(PerturbationMutation(rate=0.0, repair=False), problem, X)
    assert not raw.any()


@pytest.mark.parametrize("kwargs, name", [({"rate": 1.5}, "rate"), ({"sigma": 0}, "sigma"),
                                          ({"at_least_one": 1}, "at_least_one"), ({"prob": -1}, "prob")])
def test_bad_arguments_are_refused(kwargs, name):
    with pytest.raises(MopruneValueError, match=f"^{name} must be"):
        PerturbationMutation(**kwargs)


def test_it_plugs_into_nsga2():
    problem = tiny_problem()
    algorithm = NSGA2(pop_size=10, sampling=BinaryRandomSampling(), mutation=PerturbationMutation(rate=0.05),
                      repair=problem.space.repair())
    result = search(problem, algorithm, n_evals=30, seed=0)
    G = np.array([e.genome for e in result.archive])
    assert G.shape == (30, H1 + H2) and result.n_evals == 30
    assert len({g.tobytes() for g in G}) > 20
