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

This module also holds :class:`SeedAlgorithm`, the small base every seed document's own loop
(``threshold_ga``, ``genecai``, ``sa``) builds on: it runs on the single-objective view
``problem.scalarized(scoring)`` (``F = -score``), so all evaluations still go through the one
problem, evaluator, cache and archive; it clips every batch to the remaining ``n_evals``
budget; and it keeps the best individual ever evaluated as ``opt``.
"""

import math

import numpy as np
from pymoo.core.algorithm import Algorithm
from pymoo.core.individual import Individual
from pymoo.core.population import Population
from pymoo.termination.max_eval import MaximumFunctionCallTermination

from moprune.algorithms import ALGORITHMS
from moprune.exceptions import invalid_value
from moprune.operators.binary import AdaptiveBitflipMutation, BinarySinglePointCrossover, NearOriginalSampling
from moprune.problem import bind_problem
from moprune.scoring import Scoring, ThresholdScore, make_scoring

__all__ = ["SeedAlgorithm", "ThresholdGA", "make_threshold_ga", "max_evals_of"]


# --------------------------------------------------------------------------------------------
# argument checks shared by the seed algorithms


def check_int(name, value, *, low=None, allow_none=False):
    """Return ``value`` as int, or raise naming the argument, the allowed values and the value."""
    if value is None and allow_none:
        return None
    allowed = f"an int >= {low}" if low is not None else "an int"
    if allow_none:
        allowed = "None or " + allowed
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise invalid_value(name, allowed, value)
    if low is not None and value < low:
        raise invalid_value(name, allowed, value)
    return int(value)


def check_real(name, value, *, low=None, high=None, low_open=False, high_open=False, allow_none=False):
    """Return ``value`` as float within the given (open or closed) bounds, or raise."""
    if value is None and allow_none:
        return None
    lo = "-inf" if low is None else f"{low}"
    hi = "inf" if high is None else f"{high}"
    allowed = f"a real number in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
    if allow_none:
        allowed = "None or " + allowed
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise invalid_value(name, allowed, value)
    value = float(value)
    if not math.isfinite(value):
        raise invalid_value(name, allowed, value)
    if low is not None and (value < low or (low_open and value == low)):
        raise invalid_value(name, allowed, value)
    if high is not None and (value > high or (high_open and value == high)):
        raise invalid_value(name, allowed, value)
    return value


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    if value not in choices:
        raise invalid_value(name, f"one of {list(choices)}", value)
    return value


def reject_unknown(options, kind):
    """Raise ``TypeError`` naming every unknown option of algorithm ``kind``."""
    if options:
        raise TypeError(f"{kind}: unknown option(s) {sorted(options)}")


# --------------------------------------------------------------------------------------------
# the shared base


def max_evals_of(termination):
    """The smallest ``n_max_evals`` of any ``MaximumFunctionCallTermination`` in ``termination``.

    Looks through combined criteria (``TerminateIfAny`` and friends, attribute ``criteria``);
    ``inf`` when there is no evaluation budget.
    """
    if isinstance(termination, MaximumFunctionCallTermination):
        return math.inf if termination.n_max_evals is None else termination.n_max_evals
    best = math.inf
    for sub in getattr(termination, "criteria", ()) or ():
        best = min(best, max_evals_of(sub))
    return best


class SeedAlgorithm(Algorithm):
    """Base of the seed documents' own single-objective loops.

    Args:
        scoring: The :class:`moprune.scoring.Scoring` whose ``-score`` is minimised. When the
            problem given to ``setup`` has a ``scalarized`` method (a
            :class:`moprune.PruningProblem`), the algorithm runs on ``problem.scalarized(scoring)``;
            a plain single-objective pymoo problem is used as it is (``F`` is ``-score``).
        **kwargs: pymoo ``Algorithm`` arguments (``termination``, ``seed``, ...).

    Attributes:
        pruning_problem: The problem searched (the scalarized view; ``None`` before ``setup``).
        best: The individual with the lowest ``F`` ever evaluated (ties: the earliest).
    """

    def __init__(self, *, scoring, **kwargs):
        super().__init__(**kwargs)
        self.scoring = scoring
        self.pruning_problem = None
        self.best = None

    def setup(self, problem, **kwargs):
        if problem.n_obj != 1 and hasattr(problem, "scalarized"):
            problem = problem.scalarized(self.scoring)
        self.pruning_problem = problem
        if problem.n_obj != 1:
            raise invalid_value("problem", "a single-objective problem (F = -score)", f"{problem.n_obj} objectives")
        return super().setup(problem, **kwargs)

    # ---- what the seed loops use

    @property
    def space(self):
        """The problem's :class:`moprune.space.Space`, or ``None`` for a plain pymoo problem."""
        return getattr(self.pruning_problem, "space", None)

    def group_slices(self):
        """Genome slices of the gene groups (one per gene without a space)."""
        space = self.space
        if space is not None and getattr(space, "group_slices", None):
            return list(space.group_slices)
        return [slice(i, i + 1) for i in range(self.problem.n_var)]

    def is_binary(self):
        """Whether genomes are boolean (channel bits / weight masks)."""
        space = self.space
        if space is not None:
            return getattr(space, "vtype", float) is bool
        return getattr(self.problem, "vtype", float) is bool

    def original(self):
        """The unpruned genome."""
        space = self.space
        if space is not None:
            return np.asarray(space.original())
        return np.asarray(self.problem.xu, dtype=float).copy()

    def repair_X(self, X):
        """Apply the space's repair (e.g. at least one channel per group) to genomes ``X``."""
        space = self.space
        X = np.asarray(X)
        if space is None or len(X) == 0:
            return X
        pop = Population.new("X", X)
        pop = space.repair().do(self.problem, pop)
        return np.asarray(pop.get("X"))

    def budget_left(self):
        """Evaluations left before the ``n_evals`` budget (``inf`` without one)."""
        return max_evals_of(self.termination) - self.evaluator.n_eval

    def clip_to_budget(self, X):
        """The first rows of ``X`` that fit in the remaining evaluation budget."""
        left = self.budget_left()
        if math.isinf(left):
            return X
        return X[: max(0, int(left))]

    def evaluate_now(self, X):
        """Evaluate genomes immediately (outside the infill/advance cycle) and return the population.

        They go through the same problem and pymoo evaluator as every other candidate, so they
        are cached, archived and counted in ``n_evals``; the best-ever individual is updated.
        """
        pop = Population.new("X", np.asarray(X))
        if len(pop) == 0:
            return pop
        pop.set("n_gen", self.n_iter if self.n_iter is not None else 1)
        self.evaluator.eval(self.problem, pop, algorithm=self)
        self.note(pop)
        return pop

    def accuracy_of(self, pop):
        """Validation accuracies (``nan`` for failed candidates) of evaluated individuals.

        Read from the individuals' ``accuracy`` attribute when the problem sets one, else from
        the pruning problem's archive: its last ``len(pop)`` entries when their genomes match
        (the usual case, right after ``pop`` was evaluated), otherwise the latest entry of each
        genome.
        """
        n = len(pop)
        acc = pop.get("accuracy")
        if n and not any(a is None for a in acc):
            return np.asarray(acc, dtype=float).reshape(n)
        archive = getattr(self.pruning_problem, "archive", None)
        if archive is None:
            raise invalid_value("problem", "a PruningProblem whose archive records accuracies",
                                type(self.pruning_problem).__name__)
        X = np.asarray(pop.get("X"))
        tail = list(archive[-n:]) if n else []
        if len(tail) == n and all(np.array_equal(e.genome, x) for e, x in zip(tail, X)):
            return np.array([e.accuracy for e in tail], dtype=float)
        latest = {np.asarray(e.genome).tobytes(): e.accuracy for e in archive}
        cast = bool if self.is_binary() else float
        return np.array([latest.get(np.asarray(x, dtype=cast).tobytes(), np.nan) for x in X], dtype=float)

    @staticmethod
    def fitness(pop):
        """Scores (higher is better, ``-inf`` for failed candidates) of an evaluated population."""
        F = np.asarray(pop.get("F"), dtype=float).reshape(len(pop), -1)[:, 0]
        return np.where(np.isfinite(F), -F, -np.inf)

    def note(self, pop):
        """Update :attr:`best` with an evaluated population."""
        if len(pop) == 0:
            return
        f = self.fitness(pop)
        i = int(np.argmax(f))
        if self.best is None or f[i] > self.fitness(Population.create(self.best))[0]:
            self.best = pop[i]

    def _set_optimum(self):
        if self.best is not None:
            self.opt = Population.create(self.best)

    def advance(self, infills=None, **kwargs):
        if infills is not None:
            self.note(infills)
        return super().advance(infills=infills, **kwargs)


def take(pop, idx):
    """``pop[idx]`` as a Population (also for a single index)."""
    out = pop[idx]
    if isinstance(out, Individual):
        out = Population.create(out)
    return out


def top(pop, k):
    """The ``k`` fittest individuals of ``pop`` (stable order on ties)."""
    f = SeedAlgorithm.fitness(pop)
    order = np.argsort(-f, kind="stable")[:k]
    return take(pop, order)


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
            original (binary: the bit flips; real: the keep ratio drops by ``|N(0, 0.1)|`` of
            its range).
        scoring: The fitness (Algorithm 1's :class:`~moprune.scoring.ThresholdScore` by default).
        **kwargs: pymoo ``Algorithm`` arguments.

    Offspring identical to an individual already in the population (the two parent copies,
    unless mutated) would add nothing but a duplicate; they get one random gene mutated, and
    any remaining duplicate is dropped before evaluation. The same holds within the initial
    population (copies of the original get one gene changed). So every evaluation is a new
    genome.
    """

    def __init__(self, *, pop_size, n_parents=10, mutation_prob=None, population_threshold=None,
                 initial_flip_prob=0.05, scoring, **kwargs):
        super().__init__(scoring=scoring, **kwargs)
        self.pop_size = check_int("pop_size", pop_size, low=2)
        self.n_parents = check_int("n_parents", n_parents, low=2)
        self.mutation_prob = check_real("mutation_prob", mutation_prob, low=0.0, high=1.0, allow_none=True)
        self.population_threshold = check_int("population_threshold", population_threshold, low=2, allow_none=True)
        self.initial_flip_prob = check_real("initial_flip_prob", initial_flip_prob, low=0.0, high=1.0)
        if self.population_threshold is None:
            self.population_threshold = 6 * self.pop_size
        # the two recombinations of a pair; the two parent copies are added in _infill
        self.crossover = BinarySinglePointCrossover(prob=1.0)

    def _mutation_prob(self):
        return self.mutation_prob if self.mutation_prob is not None else 1.0 / self.problem.n_var

    def _mutate(self, X, prob, rng):
        if prob <= 0.0:
            return X
        if self.is_binary():
            mutation = AdaptiveBitflipMutation(rate=prob, schedule="constant")
            return np.asarray(mutation.do(self.problem, Population.new("X", X), random_state=rng).get("X"))
        xl, xu = np.asarray(self.problem.xl, dtype=float), np.asarray(self.problem.xu, dtype=float)
        move = rng.random(X.shape) < prob
        noise = rng.normal(0.0, 0.1, size=X.shape) * (xu - xl)
        return np.clip(np.where(move, X + noise, X), xl, xu)

    def _initialize_infill(self):
        rng = self.random_state
        if self.is_binary():
            sampling = NearOriginalSampling(keep_prob=1.0 - self.initial_flip_prob)
            X = np.asarray(sampling.do(self.problem, self.pop_size, random_state=rng).get("X"))
        else:
            # real genes (keep ratios): lower each one w.p. initial_flip_prob by |N(0, 0.1)| of its range
            xl, xu = np.asarray(self.problem.xl, dtype=float), np.asarray(self.problem.xu, dtype=float)
            X = np.tile(self.original().astype(float), (self.pop_size, 1))
            move = rng.random(X.shape) < self.initial_flip_prob
            X = np.clip(np.where(move, X - np.abs(rng.normal(0.0, 0.1, size=X.shape)) * (xu - xl), X), xl, xu)
        X = self.clip_to_budget(self._deduplicate(self.repair_X(X), rng, existing=()))
        return Population.new("X", X)

    def _initialize_advance(self, infills=None, **kwargs):
        self.pop = top(infills, self.population_threshold)

    def _infill(self):
        rng = self.random_state
        parents = top(self.pop, self.n_parents)
        order = rng.permutation(len(parents))
        if len(order) % 2 == 1:
            order = np.append(order, rng.choice(order[:-1]))
        pairs = order.reshape(-1, 2)
        recombined = self.crossover.do(self.problem, parents, parents=pairs, random_state=rng)
        copies = np.asarray(parents.get("X"))[pairs.ravel()]
        X = np.concatenate([np.asarray(recombined.get("X")), copies]).astype(copies.dtype)
        X = self._mutate(X, self._mutation_prob(), rng)
        X = self.repair_X(X)
        X = self._deduplicate(X, rng, existing=self.pop.get("X"))
        X = self.clip_to_budget(X)
        if len(X) == 0:
            self.termination.force_termination = True
            return None
        return Population.new("X", X)

    def _deduplicate(self, X, rng, *, existing):
        seen = {np.asarray(x, dtype=X.dtype).tobytes() for x in existing}
        xl, xu = np.asarray(self.problem.xl, dtype=float), np.asarray(self.problem.xu, dtype=float)
        out = []
        for x in X:
            if x.tobytes() in seen:
                x = x.copy()
                j = int(rng.integers(0, len(x)))
                if self.is_binary():
                    x[j] = not x[j]
                else:
                    x[j] = np.clip(x[j] + rng.normal(0.0, 0.1) * (xu[j] - xl[j]), xl[j], xu[j])
                x = self.repair_X(x[None, :])[0]
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
                      initial_flip_prob=0.05, threshold=None, scoring=None, **options):
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
        **options: pymoo ``Algorithm`` arguments are not accepted here; unknown options raise.

    Returns:
        A :class:`ThresholdGA`.

    Raises:
        TypeError: Unknown options.
        MopruneValueError: An option is outside its allowed values.
    """
    reject_unknown(options, "threshold_ga")
    if scoring is not None and threshold is not None:
        raise TypeError("threshold_ga: give either threshold or scoring, not both")
    if scoring is None:
        if threshold is None:
            threshold = getattr(problem, "max_accuracy_drop", None)
            threshold = 2.0 if threshold is None else threshold
        scoring = ThresholdScore(threshold=threshold)
    elif not isinstance(scoring, Scoring):
        scoring = make_scoring(scoring)
    algorithm = ThresholdGA(pop_size=pop_size, n_parents=n_parents, mutation_prob=mutation_prob,
                            population_threshold=population_threshold, initial_flip_prob=initial_flip_prob,
                            scoring=scoring)
    return bind_problem(algorithm, problem.scalarized(scoring))
