"""One perturbation for every genome type: flip bits, or add Gaussian noise scaled to the bounds.

:class:`PerturbationMutation` is what the seed loops call a move, a neighbour or a re-seed:
threshold GA's per-gene mutation and its initial population near the original model
(document 003), simulated annealing's proposals (document 002, with its adaptive rate and
layer-wise mutable genes), and two-step's re-seeding around the elite (document 001). It is a
plain pymoo ``Mutation``, so it can also be given to NSGA-II or any other pymoo algorithm.
"""

from typing import Any, Optional

import numpy as np
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem

from moprune.validation import check_bool, check_probability, check_real

__all__ = ["PerturbationMutation"]


class PerturbationMutation(Mutation):
    """Flip bits, or add Gaussian noise scaled to the bounds; clip; repair.

    Every mutable gene moves with probability ``rate``: a boolean gene flips, a real gene gets
    ``N(0, sigma) * (xu - xl)`` and is clipped to ``[xl, xu]``. With ``at_least_one``, one more
    mutable gene per individual (drawn uniformly) moves in any case, so no individual comes back
    unchanged. Last, the problem's ``space.repair()`` (e.g. at least one channel per group) is
    applied when the problem has a space.

    Args:
        rate: Per-gene move probability in [0, 1] (``None``: ``1 / n_var``).
        sigma: Standard deviation of a real gene's noise, in units of its range; > 0.
        at_least_one: Move at least one gene of every individual.
        prune_only: Moves only prune: bits are cleared (a kept unit is dropped, never restored)
            and real genes (keep ratios) only decrease.
        repair: Apply ``problem.space.repair()`` to the result.
        prob: pymoo's probability that an individual is mutated at all.

    ``do(problem, pop, random_state=..., rate=..., sigma=..., genes=...)`` takes three optional
    keyword arguments for one call: ``rate`` and ``sigma`` override the constructor's (e.g. an
    annealing schedule), and ``genes`` (a boolean mask of length ``n_var``) restricts the moves
    to those genes (e.g. one layer at a time).

    Example:
        >>> mutation = PerturbationMutation(rate=0.05, at_least_one=True)
        >>> moprune.search(problem, "nsga2", pop_size=20, n_gen=10, mutation=mutation)  # doctest: +SKIP
    """

    def __init__(self, *, rate: Optional[float] = None, sigma: float = 0.1, at_least_one: bool = False,
                 prune_only: bool = False, repair: bool = True, prob: float = 1.0) -> None:
        super().__init__(prob=check_probability("prob", prob))
        self.rate = check_probability("rate", rate, allow_none=True)
        self.sigma = check_real("sigma", sigma, low=0, low_open=True)
        self.at_least_one = check_bool("at_least_one", at_least_one)
        self.prune_only = check_bool("prune_only", prune_only)
        self.apply_repair = check_bool("repair", repair)

    def _do(self, problem: Problem, X: np.ndarray, *args: Any, random_state: np.random.Generator = None,
            rate: Optional[float] = None, sigma: Optional[float] = None, genes: Optional[np.ndarray] = None,
            **kwargs: Any) -> np.ndarray:
        X = np.asarray(X)
        n, n_var = X.shape
        rate = self.rate if rate is None else rate
        rate = 1.0 / max(n_var, 1) if rate is None else rate
        sigma = self.sigma if sigma is None else sigma
        active = np.arange(n_var) if genes is None else np.flatnonzero(np.asarray(genes, dtype=bool))
        move = np.zeros((n, n_var), dtype=bool)
        if n and len(active):
            if rate >= 1.0:
                move[:, active] = True
            else:
                move[:, active] = random_state.random((n, len(active))) < rate
                if self.at_least_one:
                    move[np.arange(n), active[random_state.integers(0, len(active), size=n)]] = True
        binary = X.dtype == bool or getattr(problem, "vtype", None) is bool
        if binary:
            bits = X.astype(bool)
            out = bits & ~move if self.prune_only else bits ^ move
        else:
            xl = np.asarray(problem.xl, dtype=float)
            xu = np.asarray(problem.xu, dtype=float)
            noise = random_state.normal(0.0, sigma, size=(n, n_var)) * (xu - xl)
            if self.prune_only:
                noise = -np.abs(noise)
            out = np.clip(np.where(move, X.astype(float) + noise, X.astype(float)), xl, xu)
        space = getattr(problem, "space", None)
        if self.apply_repair and space is not None and n:
            out = np.asarray(space.repair().do(problem, Population.new("X", out)).get("X"))
        return out
