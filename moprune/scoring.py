"""Single-objective scores of a pruned candidate (higher is better).

A :class:`Scoring` turns the measured accuracy and the analytic cost of candidates into one
number per candidate. Single-objective algorithms (``"ga"`` and the seed documents' own loops)
minimise ``-score`` through :meth:`moprune.PruningProblem.scalarized`.

Every score is vectorised: all arguments may be arrays of the same length (``base_accuracy``
is a scalar), and the result is a float array. Accuracies are fractions in [0, 1]; the
documents' formulas that work in percent points convert internally.

Example:
    >>> from moprune.scoring import make_scoring
    >>> score = make_scoring("weighted", w_acc=1.0, w_macs=0.5)
    >>> float(score(0.9, 0.5, 0.5, 0.5, 0.95)[0])
    1.15
"""

import numpy as np

from moprune.exceptions import invalid_value
from moprune.registry import Registry
from moprune.validation import check_choice, check_real, conflict

SCORINGS = Registry("scoring")

DEFAULT_ACCURACY_DROP = 2.0
"""Accuracy points a pruned model may lose when nothing else is said (documents 002 and 003 use 2).

The default of :class:`ThresholdScore`'s ``threshold`` and, through
:func:`moprune.algorithms.base.accuracy_drop_of`, of the seed algorithms' allowed drop when the
problem has no ``max_accuracy_drop``.
"""

_COSTS = ("macs", "params")


class Scoring:
    """Base class of scores; subclasses implement :meth:`_score`.

    Attributes:
        name: Registry name of the score.
    """

    name = "scoring"

    def __call__(self, accuracy, macs_ratio, params_ratio, sparsity, base_accuracy):
        """Score candidates (higher is better).

        Args:
            accuracy: Validation accuracy in [0, 1] (array or scalar).
            macs_ratio: MACs of the pruned model divided by the base model's.
            params_ratio: Parameters of the pruned model divided by the base model's.
            sparsity: Fraction of prunable units removed.
            base_accuracy: Accuracy in [0, 1] of the unpruned model on the same data (scalar).

        Returns:
            A 1-D float array of scores, one per candidate.
        """
        arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, dtype=float))
                                       for a in (accuracy, macs_ratio, params_ratio, sparsity)))
        return np.asarray(self._score(*arrays, float(base_accuracy)), dtype=float)

    def _score(self, accuracy, macs_ratio, params_ratio, sparsity, base_accuracy):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


@SCORINGS.register("weighted")
class WeightedScore(Scoring):
    """Document 000's weighted sum (eq. 1): ``w_acc * accuracy + w_macs * (1 - MACs / MACs_base)``.

    ``w_params`` and ``w_sparsity`` extend it with ``(1 - params / params_base)`` and the
    sparsity; both default to 0, which gives eq. 1 exactly.

    Args:
        w_acc: Weight of the accuracy (fraction in [0, 1]); non-negative.
        w_macs: Weight of the MAC reduction; non-negative.
        w_params: Weight of the parameter reduction; non-negative.
        w_sparsity: Weight of the sparsity; non-negative.

    Raises:
        MopruneValueError: A weight is negative or not finite, or all weights are zero.
    """

    name = "weighted"

    def __init__(self, *, w_acc=1.0, w_macs=1.0, w_params=0.0, w_sparsity=0.0):
        self.w_acc = check_real("w_acc", w_acc, low=0)
        self.w_macs = check_real("w_macs", w_macs, low=0)
        self.w_params = check_real("w_params", w_params, low=0)
        self.w_sparsity = check_real("w_sparsity", w_sparsity, low=0)
        if self.w_acc == self.w_macs == self.w_params == self.w_sparsity == 0.0:
            raise invalid_value("w_acc, w_macs, w_params, w_sparsity", "weights not all zero",
                                (w_acc, w_macs, w_params, w_sparsity))

    def _score(self, accuracy, macs_ratio, params_ratio, sparsity, base_accuracy):
        return (self.w_acc * accuracy + self.w_macs * (1.0 - macs_ratio)
                + self.w_params * (1.0 - params_ratio) + self.w_sparsity * sparsity)


@SCORINGS.register("threshold")
class ThresholdScore(Scoring):
    """Document 003's threshold fitness (Algorithm 1).

    With ``drop = 100 * (base_accuracy - accuracy)`` (points) and ``gain = 100 * (1 - cost_ratio)``
    (percent of parameters dropped; ``cost="macs"`` uses MACs instead)::

        score = gain                               if drop < threshold
        score = gain / (drop + epsilon) - lam * drop   otherwise

    Args:
        threshold: Acceptable accuracy drop in points, in [0, 100] (document 003 uses 2).
        epsilon: Positive offset keeping the denominator positive when accuracy rises
            (document 003: "a value of 10 should be sufficient").
        lam: Weight in [0, 1] of the accuracy drop subtracted outside the acceptable region.
        cost: ``"params"`` (document 003) or ``"macs"``.

    Raises:
        MopruneValueError: An argument is outside its allowed range.
    """

    name = "threshold"

    def __init__(self, *, threshold=DEFAULT_ACCURACY_DROP, epsilon=10.0, lam=0.5, cost="params"):
        self.threshold = check_real("threshold", threshold, low=0.0, high=100.0, unit="accuracy points")
        self.epsilon = check_real("epsilon", epsilon, low=0, low_open=True)
        self.lam = check_real("lam", lam, low=0.0, high=1.0)
        self.cost = check_choice("cost", cost, _COSTS)

    def _score(self, accuracy, macs_ratio, params_ratio, sparsity, base_accuracy):
        drop = 100.0 * (base_accuracy - accuracy)
        gain = 100.0 * (1.0 - (params_ratio if self.cost == "params" else macs_ratio))
        with np.errstate(divide="ignore", invalid="ignore"):  # only used where drop >= threshold >= 0
            outside = gain / (drop + self.epsilon) - self.lam * drop
        return np.where(drop < self.threshold, gain, outside)


@SCORINGS.register("genecai")
class GeneCAIScore(Scoring):
    """GeneCAI's score (document 004, eq. 9) with the accuracy penalty of eq. 7.

    In percent points, with ``A`` the candidate's accuracy, ``A_M`` the base accuracy and
    ``dC = 1 - cost_ratio`` the normalised cost reduction::

        PEN   = A_M - A                              if A >= acc_threshold
        PEN   = A_M - A + exp(acc_threshold - A)     otherwise
        score = exp(dC) / max(PEN, min_penalty)

    ``PEN`` is zero or negative when pruning does not lower the accuracy; the paper leaves that
    case open, so it is floored at ``min_penalty`` points (such candidates all get the top
    penalty and compete on cost).

    Args:
        acc_threshold: Accuracy constraint ``acc_thr`` in percent, in [0, 100] (absolute, as in
            the paper: 90 for its ResNets, 60 for VGG).
        cost: ``"macs"`` (the paper's FLOPs) or ``"params"``.
        min_penalty: Positive floor of ``PEN`` in points.

    Raises:
        MopruneValueError: An argument is outside its allowed range.
    """

    name = "genecai"

    def __init__(self, *, acc_threshold=0.0, cost="macs", min_penalty=0.1):
        self.acc_threshold = check_real("acc_threshold", acc_threshold, low=0.0, high=100.0)
        self.cost = check_choice("cost", cost, _COSTS)
        self.min_penalty = check_real("min_penalty", min_penalty, low=0, low_open=True)

    def penalty(self, accuracy, base_accuracy):
        """Eq. 7's ``PEN_acc`` in points, floored at ``min_penalty``."""
        a = 100.0 * np.asarray(accuracy, dtype=float)
        pen = 100.0 * base_accuracy - a
        pen = np.where(a >= self.acc_threshold, pen, pen + np.exp(self.acc_threshold - a))
        return np.maximum(pen, self.min_penalty)

    def _score(self, accuracy, macs_ratio, params_ratio, sparsity, base_accuracy):
        gain = 1.0 - (macs_ratio if self.cost == "macs" else params_ratio)
        return np.exp(gain) / self.penalty(accuracy, base_accuracy)


def make_scoring(scoring, **kwargs):
    """Build a score from a registry name, or pass a :class:`Scoring` through.

    Args:
        scoring: ``"weighted"``, ``"threshold"``, ``"genecai"`` or a :class:`Scoring` instance.
        **kwargs: Keyword arguments of the score's constructor (only with a name).

    Returns:
        A :class:`Scoring`.

    Raises:
        MopruneValueError: Unknown name (the message lists the choices) or a bad argument.
        TypeError: Unknown keyword arguments.
        ConflictingArgumentsError: Keyword arguments given with an instance.
    """
    if isinstance(scoring, Scoring):
        if kwargs:
            raise conflict(("scoring options",), "empty with a Scoring instance (it is configured already)",
                           sorted(kwargs))
        return scoring
    return SCORINGS.get(scoring)(**kwargs)
