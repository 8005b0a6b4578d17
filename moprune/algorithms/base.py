"""Shared pieces of the seed documents' own loops (``threshold_ga``, ``genecai``, ``sa``).

:class:`SeedAlgorithm` runs on the single-objective view ``problem.scalarized(scoring)``
(``F = -score``), so all evaluations still go through the one problem, evaluator, cache and
archive. It owns the loop glue every seed loop needs: a subclass only proposes genomes
(:meth:`SeedAlgorithm._initial_genomes`, :meth:`SeedAlgorithm._next_genomes`); the base class
cuts each batch to the remaining ``n_evals`` budget (terminating when nothing fits) and keeps
the best individual ever evaluated as ``opt``. Options are validated with
:mod:`moprune.validation`; the default allowed accuracy drop is :func:`accuracy_drop_of`.
"""

import math

import numpy as np
from pymoo.core.algorithm import Algorithm
from pymoo.core.individual import Individual
from pymoo.core.population import Population
from pymoo.termination.max_eval import MaximumFunctionCallTermination

from moprune.exceptions import invalid_value
from moprune.scoring import DEFAULT_ACCURACY_DROP

__all__ = ["DEFAULT_ACCURACY_DROP", "SeedAlgorithm", "accuracy_drop_of", "max_evals_of", "take", "top"]

# --------------------------------------------------------------------------------------------
# the shared base


def accuracy_drop_of(problem):
    """The accuracy drop (points) a seed algorithm allows by default on ``problem``.

    The problem's ``max_accuracy_drop`` when it has one, else :data:`DEFAULT_ACCURACY_DROP`.
    """
    drop = getattr(problem, "max_accuracy_drop", None)
    return DEFAULT_ACCURACY_DROP if drop is None else float(drop)


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

    # ---- the loop glue: subclasses propose genomes, the base class fits them to the budget

    def _initial_genomes(self):
        """The genomes of the initial population (repaired), before the budget cut."""
        raise NotImplementedError

    def _next_genomes(self):
        """The genomes of the next generation (repaired), or ``None`` to stop the run."""
        raise NotImplementedError

    def _initialize_infill(self):
        return Population.new("X", self.clip_to_budget(np.asarray(self._initial_genomes())))

    def _infill(self):
        X = self._next_genomes()
        X = None if X is None else self.clip_to_budget(np.asarray(X))
        if X is None or len(X) == 0:
            self.termination.force_termination = True
            return None
        return Population.new("X", X)

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
        if hasattr(self.pruning_problem, "as_genomes"):
            X = self.pruning_problem.as_genomes(X)  # the archive's genome type (bool, int64 or float)
        else:
            X = np.asarray(X, dtype=bool if self.is_binary() else float)
        return np.array([latest.get(x.tobytes(), np.nan) for x in X], dtype=float)

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
