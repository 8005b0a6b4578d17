"""What a search leaves behind: one :class:`Evaluation` per candidate, inside a :class:`SearchResult`.

The search core fills these; ``moprune.results`` turns them into DataFrames. Nothing here runs
a network.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from moprune.exceptions import invalid_value

RESULT_FIELDS = ("objectives", "algorithm", "seed", "base_accuracy", "base_macs", "base_params",
                 "max_accuracy_drop")
"""What a :class:`SearchResult` holds besides its archive (see :meth:`SearchResult.meta`)."""


@dataclass
class Evaluation:
    """One evaluated (or cache-served) candidate.

    Attributes:
        genome: The genome as evaluated (after repair).
        plan_key: :attr:`moprune.space.Plan.key` of its decoded plan.
        summary: :attr:`moprune.space.Plan.summary` (kept channels per group, sparsity per layer).
        objectives: The objective values written to pymoo's ``F`` (all minimised), in the
            order of :attr:`SearchResult.objectives`.
        accuracy: Validation accuracy in [0, 1] (``nan`` when the candidate failed). For a
            confirmed candidate: measured on the subset and the confirmation images
            together, shifted by the base model's own difference between those images and the
            subset, so that its drop from the base is the one measured on all of them.
        macs, params: Absolute counts of the pruned model.
        macs_ratio, params_ratio: Ratios to the base model.
        sparsity: Fraction of prunable units (channels or weights) removed.
        feasible: Whether every constraint holds.
        generation: The generation (0-based) in which it was requested.
        cached: Served from the evaluation cache instead of being run.
        seconds: Wall time spent evaluating it (0 when cached).
        error: The error message when evaluation failed, else ``None``.
        screened: Measurement stopped early because the candidate is dominated (see
            :attr:`moprune.PruningProblem.screen`); ``accuracy`` is then an upper bound.
        subset_accuracy: Accuracy on the validation subset alone (equal to ``accuracy`` unless
            confirmed; ``nan`` where unknown, e.g. runs written before confirmation).
        confirmed_accuracy: For a candidate measured on the confirmation images as well (one
            that could enter the front, see :attr:`moprune.PruningProblem.confirm`): its
            accuracy over the subset and those images together, before the shift of
            ``accuracy``; ``nan`` otherwise.
        confirm_images: How many confirmation images ``confirmed_accuracy`` counts (0 when not
            confirmed, or unknown: runs written before this was recorded).
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
    screened: bool = False
    subset_accuracy: float = float("nan")
    confirmed_accuracy: float = float("nan")
    confirm_images: int = 0

    @property
    def confirmed(self) -> bool:
        """Whether it was measured on the confirmation images as well."""
        return bool(np.isfinite(self.confirmed_accuracy))

    @property
    def accuracy_on_subset(self) -> float:
        """Accuracy on the validation subset alone (``accuracy`` when that is not recorded)."""
        return self.subset_accuracy if np.isfinite(self.subset_accuracy) else self.accuracy


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
    def n_evals(self) -> int:
        """Number of candidates in the archive, cached ones included."""
        return len(self.archive)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], archive: Sequence[Evaluation], *, space: Any = None,
                  pymoo_result: Any = None) -> "SearchResult":
        """The one place a :class:`SearchResult` is assembled.

        Args:
            meta: The :data:`RESULT_FIELDS` (as :meth:`meta` returns them, e.g. read back from a
                run directory's JSON).
            archive: The evaluations, in order (copied into a new list).
            space: The space searched, if at hand.
            pymoo_result: pymoo's ``Result``, when the search ran in this process.

        Raises:
            MopruneValueError: ``meta`` is not a mapping or lacks one of :data:`RESULT_FIELDS`.
        """
        if not isinstance(meta, Mapping):
            raise invalid_value("meta", f"a mapping with keys {list(RESULT_FIELDS)}", type(meta).__name__)
        missing = [key for key in RESULT_FIELDS if key not in meta]
        if missing:
            raise invalid_value("meta", f"a mapping with keys {list(RESULT_FIELDS)}", f"one missing {missing}")
        drop = meta["max_accuracy_drop"]
        return cls(archive=list(archive), objectives=tuple(meta["objectives"]), algorithm=str(meta["algorithm"]),
                   seed=int(meta["seed"]), base_accuracy=float(meta["base_accuracy"]),
                   base_macs=float(meta["base_macs"]), base_params=float(meta["base_params"]),
                   max_accuracy_drop=None if drop is None else float(drop), pymoo_result=pymoo_result,
                   space=space)

    @classmethod
    def from_problem(cls, problem: Any, *, algorithm: str, seed: int, archive: Optional[Sequence[Evaluation]] = None,
                     base_accuracy: Optional[float] = None, pymoo_result: Any = None) -> "SearchResult":
        """The result of a search of ``problem`` (a :class:`moprune.PruningProblem` or a view of one).

        The objectives are ``problem.result_objectives`` (a scalarized view adds its score);
        archive, base values and space come from the root problem (``problem.parent`` for a view).

        Args:
            problem: The problem the algorithm searched.
            algorithm: The algorithm's name.
            seed: The run's seed.
            archive: The evaluations (default: the root problem's archive).
            base_accuracy: Overrides the root problem's ``base_accuracy`` (a value measured earlier).
            pymoo_result: pymoo's ``Result``.
        """
        root = getattr(problem, "parent", problem)
        meta = {
            "objectives": tuple(problem.result_objectives),
            "algorithm": algorithm,
            "seed": seed,
            "base_accuracy": root.base_accuracy if base_accuracy is None else base_accuracy,
            "base_macs": root.base_macs,
            "base_params": root.base_params,
            "max_accuracy_drop": root.max_accuracy_drop,
        }
        return cls.from_meta(meta, root.archive if archive is None else archive, space=root.space,
                             pymoo_result=pymoo_result)

    def meta(self) -> Dict[str, Any]:
        """The :data:`RESULT_FIELDS` as plain JSON values (objectives as a list)."""
        return {
            "objectives": [str(o) for o in self.objectives],
            "algorithm": str(self.algorithm),
            "seed": int(self.seed),
            "base_accuracy": float(self.base_accuracy),
            "base_macs": float(self.base_macs),
            "base_params": float(self.base_params),
            "max_accuracy_drop": None if self.max_accuracy_drop is None else float(self.max_accuracy_drop),
        }
