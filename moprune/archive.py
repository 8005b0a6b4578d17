"""What a search leaves behind: one :class:`Evaluation` per candidate, inside a :class:`SearchResult`.

The search core fills these; ``moprune.results`` turns them into DataFrames. Nothing here runs
a network.
"""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Evaluation:
    """One evaluated (or cache-served) candidate.

    Attributes:
        genome: The genome as evaluated (after repair).
        plan_key: :attr:`moprune.space.Plan.key` of its decoded plan.
        summary: :attr:`moprune.space.Plan.summary` (kept channels per group, sparsity per layer).
        objectives: The objective values written to pymoo's ``F`` (all minimised), in the
            order of :attr:`SearchResult.objectives`.
        accuracy: Validation accuracy in [0, 1] (``nan`` when the candidate failed).
        macs, params: Absolute counts of the pruned model.
        macs_ratio, params_ratio: Ratios to the base model.
        sparsity: Fraction of prunable units (channels or weights) removed.
        feasible: Whether every constraint holds.
        generation: The generation (0-based) in which it was requested.
        cached: Served from the evaluation cache instead of being run.
        seconds: Wall time spent evaluating it (0 when cached).
        error: The error message when evaluation failed, else ``None``.
    """

    genome: np.ndarray
    plan_key: str
    summary: dict
    objectives: tuple
    accuracy: float
    macs: float
    params: float
    macs_ratio: float
    params_ratio: float
    sparsity: float
    feasible: bool = True
    generation: int = 0
    cached: bool = False
    seconds: float = 0.0
    error: Optional[str] = None


@dataclass
class SearchResult:
    """The outcome of :func:`moprune.search`.

    Attributes:
        archive: Every candidate the algorithm asked for, in order.
        objectives: Names of the minimised objectives (e.g. ``("error", "macs")``).
        algorithm: Registry name of the algorithm.
        seed: The seed the run used.
        base_accuracy: Validation accuracy of the unpruned model on the same subset.
        base_macs, base_params: Counts of the unpruned model.
        max_accuracy_drop: The accuracy constraint in points (``None`` if unconstrained).
        pymoo_result: The ``pymoo.core.result.Result`` (``None`` for runs rebuilt from disk).
        space: The space searched (to rebuild a candidate with ``space.materialize``).
    """

    archive: list
    objectives: tuple
    algorithm: str
    seed: int
    base_accuracy: float
    base_macs: float
    base_params: float
    max_accuracy_drop: Optional[float] = None
    pymoo_result: object = None
    space: object = field(default=None, repr=False)

    @property
    def n_evals(self):
        """Number of candidates in the archive, cached ones included."""
        return len(self.archive)
