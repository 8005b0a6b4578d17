"""Document 003's threshold GA as a pymoo ``Algorithm`` (``"threshold_ga"``).

The loop of document 003 (Algorithm 2)::

    Population <- I individuals close to the original model
    repeat:
        Parents   <- the K individuals with the highest fitness
        Offspring <- single-point crossover of parent pairs: 2 recombinations + 2 copies per pair
        mutate every offspring (per gene, probability P)
        Population <- the T best of Population + Offspring
        BEST <- the fittest individual of Population

with the fitness of its Algorithm 1 (:class:`moprune.scoring.ThresholdScore`).

It builds on :class:`moprune.algorithms.base.SeedAlgorithm`.
"""

import numpy as np
from pymoo.core.population import Population

from moprune.algorithms import ALGORITHMS
from moprune.algorithms.base import SeedAlgorithm, accuracy_drop_of, top
from moprune.operators.binary import BinarySinglePointCrossover
from moprune.operators.perturbation import PerturbationMutation
from moprune.problem import bind_problem
from moprune.scoring import ThresholdScore, make_scoring
from moprune.validation import check_int, check_pop_size, check_probability, conflict

__all__ = ["ThresholdGA", "make_threshold_ga"]


# --------------------------------------------------------------------------------------------
# threshold GA


class ThresholdGA(SeedAlgorithm):
    """Document 003's GA (Algorithm 2): top-K parents, four offspring per pair, keep the top T.

    Args:
        pop_size: ``I``, the size of the initial population (close to the original model).
        n_parents: ``K``, the number of fittest individuals that mate (paired at random; an odd
            one out mates with a random other parent).
        mutation_prob: ``P``, per-gene mutation probability of every offspring (``None``:
            ``1 / n_var``). Binary genes flip; real genes get ``N(0, 0.1)`` of their range.
        population_threshold: ``T``, how many individuals survive a generation (``None``:
            ``6 * pop_size``, document 003's ratio 300 / 50).
        initial_flip_prob: Per-gene probability that an initial individual differs from the
            original (binary: the unit is pruned; real: the keep ratio drops by ``|N(0, 0.1)|``
            of its range).
        scoring: The fitness (Algorithm 1's :class:`~moprune.scoring.ThresholdScore` by default).
        **kwargs: pymoo ``Algorithm`` arguments.

    Every move is a :class:`~moprune.operators.PerturbationMutation`: :attr:`mutation` mutates
    the offspring, :attr:`initial_perturbation` builds the initial population from copies of
    the original, :attr:`nudge` changes one gene of a duplicate.

    Offspring identical to an individual already in the population (the two parent copies,
    unless mutated) would add nothing but a duplicate; they get one random gene mutated, and
    any remaining duplicate is dropped before evaluation. The same holds within the initial
    population (copies of the original get one gene changed). So every evaluation is a new
    genome.
    """

    def __init__(self, *, pop_size, n_parents=10, mutation_prob=None, population_threshold=None,
                 initial_flip_prob=0.05, scoring, **kwargs):
        super().__init__(scoring=scoring, **kwargs)
        self.pop_size = check_pop_size(pop_size, minimum=2)
        self.n_parents = check_int("n_parents", n_parents, low=2)
        self.mutation_prob = check_probability("mutation_prob", mutation_prob, allow_none=True)
        self.population_threshold = check_int("population_threshold", population_threshold, low=2, allow_none=True)
        self.initial_flip_prob = check_probability("initial_flip_prob", initial_flip_prob)
        if self.population_threshold is None:
            self.population_threshold = 6 * self.pop_size
        # the two recombinations of a pair; the two parent copies are added in _next_genomes
        self.crossover = BinarySinglePointCrossover(prob=1.0)
        self.mutation = PerturbationMutation(rate=self.mutation_prob, sigma=0.1)
        self.initial_perturbation = PerturbationMutation(rate=self.initial_flip_prob, sigma=0.1, prune_only=True)
        self.nudge = PerturbationMutation(rate=0.0, sigma=0.1, at_least_one=True)

    def _perturb(self, mutation, X):
        pop = mutation.do(self.problem, Population.new("X", X), random_state=self.random_state)
        return np.asarray(pop.get("X"))

    def _initial_genomes(self):
        original = self.original().astype(bool if self.is_binary() else float)
        X = self._perturb(self.initial_perturbation, np.tile(original, (self.pop_size, 1)))
        return self._deduplicate(X, existing=())

    def _initialize_advance(self, infills=None, **kwargs):
        self.pop = top(infills, self.population_threshold)

    def _next_genomes(self):
        rng = self.random_state
        parents = top(self.pop, self.n_parents)
        order = rng.permutation(len(parents))
        if len(order) % 2 == 1:
            order = np.append(order, rng.choice(order[:-1]))
        pairs = order.reshape(-1, 2)
        recombined = self.crossover.do(self.problem, parents, parents=pairs, random_state=rng)
        copies = np.asarray(parents.get("X"))[pairs.ravel()]
        X = np.concatenate([np.asarray(recombined.get("X")), copies]).astype(copies.dtype)
        X = self._perturb(self.mutation, X)
        return self._deduplicate(X, existing=self.pop.get("X"))

    def _deduplicate(self, X, *, existing):
        seen = {np.asarray(x, dtype=X.dtype).tobytes() for x in existing}
        out = []
        for x in X:
            if x.tobytes() in seen:
                x = self._perturb(self.nudge, x[None, :])[0].astype(X.dtype)
            if x.tobytes() not in seen:
                seen.add(x.tobytes())
                out.append(x)
        return np.asarray(out, dtype=X.dtype).reshape(len(out), X.shape[1])

    def _advance(self, infills=None, **kwargs):
        if infills is None or len(infills) == 0:
            return
        merged = Population.merge(self.pop, infills)
        self.pop = top(merged, self.population_threshold)


@ALGORITHMS.register("threshold_ga")
def make_threshold_ga(problem, *, pop_size, n_parents=10, mutation_prob=None, population_threshold=None,
                      initial_flip_prob=0.05, threshold=None, scoring=None):
    """Build document 003's threshold GA (see :class:`ThresholdGA`).

    Args:
        problem: The :class:`moprune.PruningProblem`.
        pop_size: ``I``, initial population size.
        n_parents: ``K`` (default 10, as in document 003).
        mutation_prob: ``P`` per gene (default ``1 / n_var``).
        population_threshold: ``T`` (default ``6 * pop_size``).
        initial_flip_prob: Closeness of the initial population to the original.
        threshold: Acceptable accuracy drop in points, in [0, 100], for the default
            :class:`~moprune.scoring.ThresholdScore` (default: the problem's
            ``max_accuracy_drop``, else 2 as in document 003). Not allowed with ``scoring``.
        scoring: A :class:`~moprune.scoring.Scoring` or a registry name to use instead.

    Returns:
        A :class:`ThresholdGA`.

    Raises:
        TypeError: Unknown options.
        MopruneValueError: An option is outside its allowed values.
        ConflictingArgumentsError: Both ``threshold`` and ``scoring`` are given.
    """
    if scoring is not None and threshold is not None:
        raise conflict(("threshold", "scoring"), "at most one of them set", (threshold, scoring))
    if scoring is None:
        scoring = ThresholdScore(threshold=accuracy_drop_of(problem) if threshold is None else threshold)
    else:
        scoring = make_scoring(scoring)
    algorithm = ThresholdGA(pop_size=pop_size, n_parents=n_parents, mutation_prob=mutation_prob,
                            population_threshold=population_threshold, initial_flip_prob=initial_flip_prob,
                            scoring=scoring)
    return bind_problem(algorithm, problem.scalarized(scoring))
