"""Operators for integer genomes (rank levels, channel levels; document 004).

pymoo already has what NSGA-II and the GA need for integer variables except the discrete
mutation document 004 asks for: integer sampling is ``IntegerRandomSampling`` and crossover is
``SBX`` (or uniform / single-point) followed by the space's rounding repair. This module adds:

- :class:`StepMutation`: each gene moves one level up or down (document 004, "discrete-valued
  individuals"), staying within its bounds;
- :func:`characterize_rank_boundaries`: GeneCAI's eq. 17, per gene the smallest level that keeps
  accuracy above the threshold with every other gene at its maximum (bisection on integers);
- :class:`IntegerDirectedSampling`: each gene drawn uniformly from ``{theta, ..., K}``
  (GeneCAI Sec. 4.4);
- :class:`DiversityGuidedStepMutation`: GeneCAI's diversity-guided mutation (eqs. 12-15) with
  +-1 steps.

Every random number comes from the ``random_state`` pymoo hands to ``_do``.
"""

import numpy as np
from pymoo.core.mutation import Mutation
from pymoo.core.sampling import Sampling

from moprune.exceptions import invalid_value
from moprune.operators.continuous import DiversityGuidedMutation, normalize
from moprune.validation import check_bool, check_int, check_probability

__all__ = ["DiversityGuidedStepMutation", "IntegerDirectedSampling", "StepMutation", "characterize_rank_boundaries",
           "step"]


def step(X, move, random_state, xl, xu):
    """Move the genes where ``move`` is true by +1 or -1 (drawn evenly), reflected at the bounds.

    A gene at its lower bound goes up, at its upper bound goes down; a gene whose bounds are
    equal stays. Returns a new ``int64`` array.
    """
    X = np.rint(np.asarray(X, dtype=np.float64)).astype(np.int64)
    xl = np.asarray(xl, dtype=np.int64)
    xu = np.asarray(xu, dtype=np.int64)
    delta = np.where(random_state.random(X.shape) < 0.5, -1, 1)
    delta = np.where(X <= xl, 1, np.where(X >= xu, -1, delta))
    delta = np.where(xl == xu, 0, delta)
    return np.clip(X + np.where(move, delta, 0), xl, xu)


class StepMutation(Mutation):
    """Document 004's discrete mutation: each gene moves one level up or down with probability ``prob_var``.

    Args:
        prob_var: Per-gene probability of a move (``None``: ``1 / n_var``).
        at_least_one: Move one gene (drawn uniformly among those with ``xl < xu``) of every
            individual in any case, so no mutated individual comes back unchanged.
        prob: Probability that an individual is mutated at all.
    """

    def __init__(self, *, prob_var=None, at_least_one=True, prob=1.0):
        super().__init__(prob=check_probability("prob", prob))
        self.rate = check_probability("prob_var", prob_var, allow_none=True)
        self.at_least_one = check_bool("at_least_one", at_least_one)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        n, d = np.shape(X)
        rate = self.rate if self.rate is not None else 1.0 / max(d, 1)
        move = random_state.random((n, d)) < rate
        movable = np.flatnonzero(np.asarray(problem.xu) > np.asarray(problem.xl))
        if self.at_least_one and n and len(movable):
            move[np.arange(n), movable[random_state.integers(0, len(movable), size=n)]] = True
        return step(X, move, random_state, problem.xl, problem.xu)


def characterize_rank_boundaries(accuracy_of, *, xl, xu, accuracy_threshold, max_steps=None):
    """GeneCAI's eq. 17: per gene, the smallest level keeping accuracy above the threshold.

    Gene ``i`` is set to a level ``r`` and every other gene to its maximum ``K_j`` (``xu``);
    assuming accuracy grows with the level, bisection on ``{xl, ..., xu}`` keeps ``hi``
    accurate enough (``xu``, the full rank, is taken as such) and ``lo`` not. Every step asks
    ``accuracy_of`` for one batch: one genome per gene still open.

    Args:
        accuracy_of: Callable ``(X: (n, n_var) int array) -> (n,) accuracies`` (GeneCAI passes one
            that evaluates through the problem: cached, archived, counted in the budget).
        xl, xu: Integer gene bounds.
        accuracy_threshold: A level is acceptable when its accuracy is strictly greater.
        max_steps: Stop after this many bisection steps (``None``: until every gene is
            resolved, ``ceil(log2(xu - xl + 1))`` steps); unresolved genes keep ``hi``.

    Returns:
        ``theta``: int array of ``n_var`` levels (``xu`` where even one level less fails).
    """
    xl = np.asarray(xl, dtype=np.int64)
    xu = np.asarray(xu, dtype=np.int64)
    max_steps = check_int("max_steps", max_steps, low=0, allow_none=True)
    lo, hi = xl - 1, xu.copy()
    steps = 0
    while (hi - lo > 1).any() and (max_steps is None or steps < max_steps):
        genes = np.flatnonzero(hi - lo > 1)
        mid = (lo[genes] + hi[genes]) // 2
        X = np.tile(xu, (len(genes), 1))
        X[np.arange(len(genes)), genes] = mid
        acc = np.asarray(accuracy_of(X), dtype=float).reshape(-1)
        if acc.shape[0] != len(genes):
            raise invalid_value("accuracy_of", f"a callable returning {len(genes)} accuracies", acc.shape)
        ok = acc > accuracy_threshold
        hi[genes[ok]] = mid[ok]
        lo[genes[~ok]] = mid[~ok]
        steps += 1
    return hi


class IntegerDirectedSampling(Sampling):
    """GeneCAI's directed initialization for ranks: gene ``i`` uniform in ``{theta[i], ..., xu[i]}``.

    Args:
        theta: Per-gene smallest acceptable levels (from :func:`characterize_rank_boundaries`).
    """

    def __init__(self, *, theta):
        super().__init__()
        theta = np.asarray(theta)
        if theta.ndim != 1 or not np.isfinite(theta).all() or (np.rint(theta) != theta).any():
            raise invalid_value("theta", "a 1-D array of integer levels", theta)
        self.theta = theta.astype(np.int64)

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        xu = np.asarray(problem.xu, dtype=np.int64)
        if self.theta.shape[0] != problem.n_var:
            raise invalid_value("theta", f"{problem.n_var} levels (one per gene)", self.theta.shape[0])
        low = np.clip(self.theta, np.asarray(problem.xl, dtype=np.int64), xu)
        return random_state.integers(low, xu + 1, size=(n_samples, problem.n_var))


class DiversityGuidedStepMutation(DiversityGuidedMutation):
    """GeneCAI's diversity-guided mutation (eqs. 12-15) for integer genes: tweaks are +-1 steps.

    As :class:`moprune.operators.continuous.DiversityGuidedMutation`, with each tweak a move of
    one level (reflected at the bounds). In eq. 15 the tweak's variance is that of a one-level
    step in normalised units, ``mean_i 1 / (xu_i - xl_i)^2``.

    Args:
        p_tweak: Per-gene tweak probability (paper: 0.05).
        p_mutate: Base per-individual mutation probability.
        div_threshold: Diversity threshold (``None``: half the first population's diversity).
    """

    def __init__(self, *, p_tweak=0.05, p_mutate=0.4, div_threshold=None):
        super().__init__(p_tweak=p_tweak, sigma=1.0, p_mutate=p_mutate, div_threshold=div_threshold)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        xl = np.asarray(problem.xl, dtype=float)
        xu = np.asarray(problem.xu, dtype=float)
        span = np.where(xu > xl, xu - xl, np.inf)
        self.sigma = float(np.sqrt(np.mean(1.0 / span ** 2))) or 1.0
        p_mutate = self.adapt(normalize(X, xl, xu))
        n, d = np.shape(X)
        individual = random_state.random(n) < p_mutate
        tweak = (random_state.random((n, d)) < self.p_tweak) & individual[:, None]
        return step(X, tweak, random_state, problem.xl, problem.xu)
