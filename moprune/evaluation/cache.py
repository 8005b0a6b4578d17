"""The evaluation cache: plan key -> measured result.

Two genomes that decode to the same plan (and the survivors of elitism) are evaluated once.
The cache holds only small picklable records, so it can be saved after every generation for a
kill-safe resume (:meth:`EvaluationCache.state_dict` / :meth:`EvaluationCache.load_state_dict`).
"""

from dataclasses import dataclass, field, replace
from typing import Optional

from moprune.validation import check_int


@dataclass(frozen=True)
class EvalRecord:
    """What the evaluator measured for one candidate.

    Attributes:
        plan_key: Key of the decoded plan (:attr:`moprune.space.Plan.key`).
        accuracy: Validation accuracy in [0, 1]; ``nan`` when evaluation failed.
        seconds: Wall time spent on this candidate (0 when served from the cache).
        cached: Whether the value came from the cache.
        error: The error message when evaluation failed, else ``None``.
        loss: Mean fine-tuning loss (``nan`` without fine-tuning).
        summary: The plan's :attr:`moprune.space.Plan.summary` (for the archive).
        screened: Measurement stopped early: the candidate had already made more errors than
            a model at most as costly (``max_errors``), so it is dominated; ``accuracy`` is then
            an upper bound (the errors seen, out of the whole subset).
        confirmed_accuracy: Accuracy over the validation subset and the confirmation images
            together, when the candidate was measured on both (``confirm_limit``), else ``None``.
        confirm_images: The number of confirmation images behind ``confirmed_accuracy``
            (``None`` when not confirmed, or unknown: a record rebuilt from a run's CSV).
    """

    plan_key: str
    accuracy: float
    seconds: float = 0.0
    cached: bool = False
    error: Optional[str] = None
    loss: float = float("nan")
    summary: dict = field(default_factory=dict, compare=False)
    screened: bool = False
    confirmed_accuracy: Optional[float] = None
    confirm_images: Optional[int] = None

    @property
    def failed(self):
        """Whether the evaluation failed (exception or non-finite loss)."""
        return self.error is not None

    def as_cached(self):
        """This record as served from the cache (``cached=True``, zero seconds)."""
        return replace(self, cached=True, seconds=0.0)


class EvaluationCache:
    """A dict of :class:`EvalRecord` keyed by plan key, with optional size limit (oldest out)."""

    def __init__(self, *, max_size=None):
        self.max_size = check_int("max_size", max_size, low=1, allow_none=True)
        self._records = {}

    def get(self, key):
        """The cached record for ``key``, or ``None``."""
        return self._records.get(key)

    def put(self, record):
        """Store ``record`` under its plan key."""
        self._records[record.plan_key] = record
        if self.max_size is not None and len(self._records) > self.max_size:
            del self._records[next(iter(self._records))]

    def clear(self):
        """Forget every record."""
        self._records.clear()

    def __contains__(self, key):
        return key in self._records

    def __len__(self):
        return len(self._records)

    def state_dict(self):
        """A picklable snapshot (for resume)."""
        return {"max_size": self.max_size, "records": list(self._records.values())}

    def load_state_dict(self, state):
        """Restore a snapshot made by :meth:`state_dict`."""
        self.max_size = state["max_size"]
        self._records = {r.plan_key: r for r in state["records"]}
