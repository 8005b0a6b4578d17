"""GeneCAI (document 004, Algorithm 1) as a pymoo ``Algorithm`` (``"genecai"``).

::

    theta  <- boundary characterisation (per group, bisection on the pruning rate)   # Sec. 4.4
    P^0    <- N individuals, rate ~ N(theta/2, theta/2) clipped to [0, theta]
    div_thr <- div(P^0) / 2
    for t = 0 .. T-1:
        f_n    <- score of P^t (eq. 9)                                              # evaluation
        S^t    <- N draws with replacement, p_n = (f_n - f_min) / sum(f - f_min)    # eq. 10
        pairs  <- fittest available with the farthest from it (eq. 11)
        C^t    <- crossover(pairs | P_cross, P_swap)
        if div(C^t) <= div_thr: raise P_mutate (eq. 15)
        P^t+1  <- Mutate(C^t | P_mutate, P_tweak)

Integer genomes (rank levels of :class:`moprune.space.LowRankSpace`, document 004 eqs. 3-4):
the boundaries are eq. 17 (per gene, the smallest level keeping accuracy above ``acc_thr`` with
every other gene at its maximum, by bisection on the levels), the first population draws each
gene uniformly from ``{theta, ..., K}``, and mutation moves a gene one level up or down
(:class:`moprune.operators.integer.DiversityGuidedStepMutation`).

Replacement is generational, as in the paper (no elitism); the best individual ever
evaluated is kept as ``opt`` and every candidate is in the archive.

Boundary characterisation evaluates one single-group-pruned genome per group and bisection
step through the problem (:meth:`SeedAlgorithm.evaluate_now`): these candidates are cached,
land in the archive and count in the ``n_evals`` budget. When the budget cannot pay for them
and a first population, the number of bisection steps is reduced (down to none: ``theta = 1``
for every group, i.e. the paper's naive initialisation).
"""

import math

import numpy as np

from moprune.algorithms import ALGORITHMS
from moprune.algorithms.base import SeedAlgorithm, accuracy_drop_of
from moprune.exceptions import invalid_value
from moprune.logging import get_logger
from moprune.operators.continuous import (
    DirectedSampling,
    DiversityGuidedMutation,
    FitnessProportionateSelection,
    SwapCrossover,
    characterize_boundaries,
    diversity,
    normalize,
)
from moprune.operators.integer import (
    DiversityGuidedStepMutation,
    IntegerDirectedSampling,
    characterize_rank_boundaries,
)
from moprune.problem import bind_problem
from moprune.scoring import GeneCAIScore, make_scoring
from moprune.validation import check_choice, check_int, check_pop_size, check_real

__all__ = ["GeneCAI", "make_genecai"]

logger = get_logger("algorithms.genecai")

INITIALIZATIONS = ("directed", "random")


class GeneCAI(SeedAlgorithm):
    """GeneCAI's genetic search over continuous keep ratios or integer rank levels.

    Args:
        pop_size: ``N``.
        p_cross: Probability that a pair is crossed (paper: 0.8).
        p_swap: Per-gene swap probability of the crossover (paper: 0.2).
        p_tweak: Per-gene tweak probability of the mutation (paper: 0.05).
        sigma: Standard deviation of a tweak, in units of the gene range (paper: 0.2).
        p_mutate: Base per-individual mutation probability, raised when diversity falls below
            half the initial one (eq. 15).
        accuracy_threshold: ``acc_thr`` as an accuracy fraction in [0, 1] for the boundary
            characterisation.
        initialization: ``"directed"`` (Sec. 4.4) or ``"random"`` (``theta = 1``: the naive
            initialisation of the paper's ablation).
        bisection_steps: Bisection steps per group (resolution ``2**-steps``); for integer
            genes, at most this many steps (6 resolve 64 levels exactly).
        scoring: The fitness (:class:`~moprune.scoring.GeneCAIScore` by default).
        **kwargs: pymoo ``Algorithm`` arguments.

    Attributes:
        theta: The per-group maximal pruning rates found (after initialisation); for integer
            genomes, the per-gene smallest acceptable levels (eq. 17).
        boundary_evals: Number of candidates evaluated by the boundary characterisation.
        selection, crossover, mutation: The operators (the mutation holds the adapted
            ``current_p_mutate`` and ``div_threshold``).
    """

    def __init__(self, *, pop_size, p_cross=0.8, p_swap=0.2, p_tweak=0.05, sigma=0.2, p_mutate=0.4,
                 accuracy_threshold, initialization="directed", bisection_steps=6, scoring, **kwargs):
        super().__init__(scoring=scoring, **kwargs)
        self.pop_size = check_pop_size(pop_size, minimum=2)
        self.accuracy_threshold = check_real("accuracy_threshold", accuracy_threshold, low=0, high=1)
        self.initialization = check_choice("initialization", initialization, INITIALIZATIONS)
        self.bisection_steps = check_int("bisection_steps", bisection_steps, low=1)
        self.selection = FitnessProportionateSelection(pairing="distance")
        self.crossover = SwapCrossover(p_cross=p_cross, p_swap=p_swap)
        self.mutation = DiversityGuidedMutation(p_tweak=p_tweak, sigma=sigma, p_mutate=p_mutate)
        self.theta = None
        self.boundary_evals = 0

    def _setup(self, problem, **kwargs):
        if self.is_binary():
            raise invalid_value("space", "a continuous (ratio-encoded) or integer (rank) space for genecai", "a binary space")
        if self.is_integer():
            self.mutation = DiversityGuidedStepMutation(p_tweak=self.mutation.p_tweak, p_mutate=self.mutation.p_mutate)

    def is_integer(self):
        """Whether genomes are integer levels (ranks of a low-rank space): eq. 17 and +-1 mutation."""
        space = self.space
        return getattr(space if space is not None else self.problem, "vtype", float) is int

    # ---- initialisation (Sec. 4.4)

    def _bisection_accuracy(self, X):
        pop = self.evaluate_now(self.repair_X(X))
        self.boundary_evals += len(pop)
        return self.accuracy_of(pop)

    def _initial_genomes(self):
        if self.is_integer():
            return self._initial_levels()
        groups = self.group_slices()
        steps = self.bisection_steps if self.initialization == "directed" else 0
        left = self.budget_left()
        if not math.isinf(left):
            # keep enough budget for a first population (or what is left of it)
            affordable = int(max(0, left - min(self.pop_size, left)) // max(1, len(groups)))
            steps = min(steps, affordable)
        if steps > 0:
            self.theta = characterize_boundaries(
                self._bisection_accuracy, xl=self.problem.xl, xu=self.problem.xu, group_slices=groups,
                accuracy_threshold=self.accuracy_threshold, n_steps=steps)
        else:
            self.theta = np.ones(len(groups))
        logger.debug("boundaries theta=%s from %d evaluations (%d bisection steps)", np.round(self.theta, 4),
                     self.boundary_evals, steps)
        sampling = DirectedSampling(theta=self.theta, group_slices=groups)
        X = np.asarray(sampling.do(self.problem, self.pop_size, random_state=self.random_state).get("X"))
        return self.repair_X(X)

    def _initial_levels(self):
        """Eq. 17 for integer genes, then each gene uniform in ``{theta, ..., K}`` (Sec. 4.4)."""
        xl = np.asarray(self.problem.xl, dtype=np.int64)
        xu = np.asarray(self.problem.xu, dtype=np.int64)
        steps = self.bisection_steps if self.initialization == "directed" else 0
        left = self.budget_left()
        if not math.isinf(left):
            affordable = int(max(0, left - min(self.pop_size, left)) // max(1, self.problem.n_var))
            steps = min(steps, affordable)
        if steps > 0:
            self.theta = characterize_rank_boundaries(
                self._bisection_accuracy, xl=xl, xu=xu, accuracy_threshold=self.accuracy_threshold, max_steps=steps)
        else:
            self.theta = xl.copy()
        logger.debug("rank boundaries theta=%s from %d evaluations (%d bisection steps)", self.theta,
                     self.boundary_evals, steps)
        sampling = IntegerDirectedSampling(theta=self.theta)
        X = np.asarray(sampling.do(self.problem, self.pop_size, random_state=self.random_state).get("X"))
        return self.repair_X(X)

    def _initialize_advance(self, infills=None, **kwargs):
        self.pop = infills
        # Algorithm 1, line 2
        Z = normalize(infills.get("X"), self.problem.xl, self.problem.xu)
        self.mutation.div_threshold = diversity(Z) / 2.0

    # ---- one generation (Algorithm 1, lines 4-11)

    def _next_genomes(self):
        rng = self.random_state
        n = self.pop_size
        if len(self.pop) < 2:
            return None
        n_matings = math.ceil(n / 2)
        parents = self.selection.do(self.problem, self.pop, n_matings, 2, to_pop=False, random_state=rng)
        off = self.crossover.do(self.problem, self.pop, parents=parents, random_state=rng)
        off = off[:n]
        off = self.mutation.do(self.problem, off, random_state=rng)
        return self.repair_X(np.asarray(off.get("X"), dtype=float))

    def _advance(self, infills=None, **kwargs):
        if infills is not None and len(infills) > 0:
            self.pop = infills


def _default_accuracy_threshold(problem, max_accuracy_drop):
    """``acc_thr`` in percent: the base accuracy minus the allowed drop (points)."""
    base = float(problem.base_accuracy)
    return max(0.0, 100.0 * base - max_accuracy_drop)


@ALGORITHMS.register("genecai")
def make_genecai(problem, *, pop_size, p_cross=0.8, p_swap=0.2, p_tweak=0.05, sigma=0.2, p_mutate=0.4,
                 acc_threshold=None, initialization="directed", bisection_steps=6, cost="macs",
                 scoring=None):
    """Build GeneCAI (see :class:`GeneCAI`) for a continuous (ratio-encoded) or integer (rank) space.

    Args:
        problem: The :class:`moprune.PruningProblem` (its space must have real or integer genes).
        pop_size: ``N``.
        p_cross, p_swap, p_tweak: The paper's probabilities (0.8, 0.2, 0.05), each in [0, 1].
        sigma: Mutation step (paper: 0.2, the standard deviation), > 0.
        p_mutate: Base ``P_mutate`` in [0, 1] (adapted upwards by the diversity rule).
        acc_threshold: ``acc_thr`` in percent, in [0, 100], used by the default
            :class:`~moprune.scoring.GeneCAIScore` and by the boundary characterisation.
            Default: the problem's base accuracy minus its ``max_accuracy_drop`` (or minus 2
            points when the problem has no constraint).
        initialization: ``"directed"`` or ``"random"``.
        bisection_steps: Bisection steps per group, >= 1.
        cost: ``"macs"`` (the paper's FLOPs) or ``"params"``, for the default score.
        scoring: A :class:`~moprune.scoring.Scoring` or registry name to use instead of
            ``GeneCAIScore`` (then ``cost`` is ignored; ``acc_threshold`` still sets the
            boundary characterisation).

    Returns:
        A :class:`GeneCAI`.

    Raises:
        TypeError: Unknown options.
        MopruneValueError: An option is outside its allowed values or the space is binary.
    """
    check_choice("cost", cost, ("macs", "params"))
    space = getattr(problem, "space", None)
    if space is not None and getattr(space, "vtype", float) is bool:
        raise invalid_value("problem.space", "a continuous (ratio-encoded) or integer (rank) space for genecai",
                            f"{type(space).__name__} with binary genes")
    if acc_threshold is None:
        acc_threshold = _default_accuracy_threshold(problem, accuracy_drop_of(problem))
    acc_threshold = check_real("acc_threshold", acc_threshold, low=0, high=100, unit="percent")
    scoring = GeneCAIScore(acc_threshold=acc_threshold, cost=cost) if scoring is None else make_scoring(scoring)
    algorithm = GeneCAI(pop_size=pop_size, p_cross=p_cross, p_swap=p_swap, p_tweak=p_tweak, sigma=sigma,
                        p_mutate=p_mutate, accuracy_threshold=acc_threshold / 100.0,
                        initialization=initialization, bisection_steps=bisection_steps, scoring=scoring)
    return bind_problem(algorithm, problem.scalarized(scoring))
