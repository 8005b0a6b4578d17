"""Pick one candidate of a Pareto front (pymoo's decision-making and decomposition tools)."""

import warnings
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from moprune.archive import SearchResult
from moprune.exceptions import ConflictingArgumentsError, MopruneValueError, invalid_value
from moprune.logging import get_logger
from moprune.registry import Registry
from moprune.results.frame import objective_matrix, pareto_front
from moprune.validation import check_real

__all__ = ["PICK_METHODS", "pick"]

_LOG = get_logger("results")

PICK_METHODS = Registry("pick method")


def _normalise(F):
    """Scale each column of ``F`` to [0, 1] over the rows given (a constant column becomes 0)."""
    lo, hi = F.min(axis=0), F.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (F - lo) / span


def _asf_index(Fn, weights):
    """Index of the row minimising pymoo's ASF with importance ``weights`` (larger: matters more)."""
    from pymoo.decomposition.asf import ASF

    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    with np.errstate(divide="ignore"):
        scale = np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), np.inf)
    # ASF divides by its weights: an importance weight w becomes a divisor 1 / w.
    values = ASF().do(Fn, scale, utopian_point=np.zeros(Fn.shape[1]))
    return int(np.argmin(values))


@PICK_METHODS.register("knee")
def _pick_knee(front, F, Fn):
    """pymoo's ``HighTradeoffPoints``; among several knees (or when it finds none) the one with
    the smallest equal-weight ASF (Chebyshev distance to the ideal of the normalised front)."""
    n, m = Fn.shape
    candidates = None
    if n >= 3:
        with warnings.catch_warnings():  # pymoo silences warnings globally otherwise
            warnings.simplefilter("ignore")
            from pymoo.mcdm.high_tradeoff import HighTradeoffPoints

            candidates = HighTradeoffPoints().do(Fn)
    if candidates is None or len(candidates) == 0:
        _LOG.debug("no high trade-off point on a front of %d points; using the equal-weight ASF", n)
        return _asf_index(Fn, np.ones(m))
    candidates = np.asarray(candidates, dtype=int)
    return int(candidates[_asf_index(Fn[candidates], np.ones(m))])


@PICK_METHODS.register("asf")
def _pick_asf(front, F, Fn, weights):
    """The row minimising pymoo's achievement scalarisation (ASF) on the normalised front."""
    return _asf_index(Fn, weights)


@PICK_METHODS.register("pseudo_weights")
def _pick_pseudo_weights(front, F, Fn, weights):
    """pymoo's ``PseudoWeights``: the row whose pseudo-weights are closest to ``weights``."""
    if len(Fn) == 1:
        return 0
    from pymoo.mcdm.pseudo_weights import PseudoWeights

    w = np.asarray(weights, dtype=float)
    # A constant objective has no range: give it ideal 0 and nadir 1 so its pseudo-weight is 1.
    nadir = np.where(Fn.max(axis=0) > 0, Fn.max(axis=0), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = PseudoWeights(w / w.sum(), ideal=np.zeros(Fn.shape[1]), nadir=nadir).do(Fn)
    return int(index)


def _describe(row):
    parts = [f"eval {row.name}"]
    if "accuracy_drop" in row.index:
        parts.append(f"accuracy drop {row['accuracy_drop']:.3g} points")
    if "accuracy" in row.index:
        parts.append(f"accuracy {row['accuracy']:.4g}")
    if "macs_ratio" in row.index:
        parts.append(f"macs ratio {row['macs_ratio']:.4g}")
    return ", ".join(parts)


@PICK_METHODS.register("max_drop")
def _pick_max_drop(front, F, Fn, max_drop, margin_se=0.0):
    """Fewest MACs among rows losing at most ``max_drop`` accuracy points (ties: most accurate);
    with ``margin_se``, the drop plus that many of its standard errors must fit."""
    _require_columns(front, ("accuracy_drop", "macs_ratio", "accuracy"), "max_drop")
    drop = front["accuracy_drop"].to_numpy(dtype=float)
    if margin_se > 0:
        if "accuracy_drop_se" not in front.columns:
            raise invalid_value("margin_se", "0 for a frame without an 'accuracy_drop_se' column (retrain_front "
                                "adds one)", margin_se)
        drop = drop + margin_se * np.nan_to_num(front["accuracy_drop_se"].to_numpy(dtype=float), nan=0.0)
    ok = np.flatnonzero(drop <= max_drop + 1e-9)
    if len(ok) == 0:
        closest = front.iloc[int(np.argmin(drop))]
        margin = f" with a margin of {margin_se!r} standard errors" if margin_se > 0 else ""
        raise MopruneValueError(
            f"no candidate on the front loses at most max_drop={max_drop!r} accuracy points{margin}; "
            f"the closest is {_describe(closest)}"
        )
    macs = front["macs_ratio"].to_numpy(dtype=float)[ok]
    acc = front["accuracy"].to_numpy(dtype=float)[ok]
    return int(ok[np.lexsort((-acc, macs))[0]])


@PICK_METHODS.register("target_macs")
def _pick_target_macs(front, F, Fn, target_macs):
    """Most accurate row with ``macs_ratio <= target_macs`` (ties: fewest MACs)."""
    _require_columns(front, ("macs_ratio", "accuracy"), "target_macs")
    macs = front["macs_ratio"].to_numpy(dtype=float)
    ok = np.flatnonzero(macs <= target_macs + 1e-12)
    if len(ok) == 0:
        closest = front.iloc[int(np.argmin(macs))]
        raise MopruneValueError(
            f"no candidate on the front has macs_ratio <= target_macs={target_macs!r}; "
            f"the closest is {_describe(closest)}"
        )
    acc = front["accuracy"].to_numpy(dtype=float)[ok]
    return int(ok[np.lexsort((macs[ok], -acc))[0]])


def _require_columns(df, columns, method):
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MopruneValueError(f"method {method!r} needs the columns {missing}, which the frame lacks "
                                "(build it with moprune.results.to_frame)")


_METHOD_ARGS = {"knee": (), "asf": ("weights",), "pseudo_weights": ("weights",),
                "max_drop": ("max_drop",), "target_macs": ("target_macs",)}


def _check_weights(weights, m):
    try:
        w = np.asarray(weights, dtype=float)
    except (TypeError, ValueError):
        raise invalid_value("weights", f"{m} non-negative numbers, not all zero", weights) from None
    if w.shape != (m,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise invalid_value("weights", f"{m} non-negative numbers (one per objective), not all zero",
                            weights)
    return w


def pick(front: Union[SearchResult, pd.DataFrame], method: str = "knee", *,
         weights: Optional[Sequence[float]] = None, max_drop: Optional[float] = None,
         target_macs: Optional[float] = None, objectives: Optional[Sequence[str]] = None,
         margin_se: float = 0.0) -> pd.Series:
    """Pick one candidate of the Pareto front.

    Methods (objectives are normalised to [0, 1] over the front first):

    - ``"knee"``: pymoo's ``HighTradeoffPoints``; among several knees, or when pymoo finds none
      (fronts of fewer than 3 points, no outlier trade-off), the point with the smallest
      equal-weight ASF.
    - ``"asf"``: the minimum of pymoo's ``ASF`` with importance ``weights`` (one per objective,
      larger means that objective matters more).
    - ``"pseudo_weights"``: pymoo's ``PseudoWeights``: the point whose pseudo-weights are closest
      to ``weights``.
    - ``"max_drop"``: fewest MACs among rows losing at most ``max_drop`` accuracy points
      (``100 * (base_accuracy - accuracy)``); with ``margin_se``, the drop plus that many of
      its standard errors (column ``accuracy_drop_se``, which :func:`moprune.retrain_front`
      writes) must fit, so that a model just inside the limit by the luck of the validation
      images is not the one delivered.
    - ``"target_macs"``: the most accurate row with ``macs_ratio <= target_macs``.

    Args:
        front: A SearchResult, a frame from :func:`to_frame` or a front from
            :func:`pareto_front` (the front is (re)computed, which leaves a front unchanged).
        method: One of :data:`PICK_METHODS` names.
        weights: For ``"asf"`` and ``"pseudo_weights"``: non-negative, not all zero, one per
            objective.
        max_drop: For ``"max_drop"``: accuracy points, ``>= 0``.
        target_macs: For ``"target_macs"``: a MACs ratio in (0, 1].
        objectives: Objectives of the front (default: the run's).
        margin_se: For ``"max_drop"``: standard errors of the drop to keep below ``max_drop``,
            ``>= 0`` (``1.0``: the claim holds with about 84% confidence; needs the
            ``accuracy_drop_se`` column when positive).

    Returns:
        The picked row as a pandas Series (its ``name`` is the ``eval`` index).

    Raises:
        MopruneValueError: unknown method (the message lists the choices), an argument the method
            does not use or lacks, an invalid value, an empty front, or an impossible request
            (the message names the closest row).
    """
    fn = PICK_METHODS.get(method)
    supplied = {"weights": weights, "max_drop": max_drop, "target_macs": target_macs}
    needed = _METHOD_ARGS.get(method, ())
    for name, value in supplied.items():
        if name in needed and value is None:
            raise ConflictingArgumentsError(f"method {method!r} needs {name}=...")
        if name not in needed and value is not None:
            raise ConflictingArgumentsError(f"{name} is not used by method {method!r}; "
                                            f"it needs {list(needed) if needed else 'no extra argument'}")
    front = pareto_front(front, objectives=objectives)
    if len(front) == 0:
        raise MopruneValueError("the Pareto front is empty: no evaluated candidate succeeded "
                                "(and was feasible), so there is nothing to pick")
    F = objective_matrix(front, front.attrs["front_objectives"])
    kwargs = {}
    if "weights" in needed:
        kwargs["weights"] = _check_weights(weights, F.shape[1])
    margin_se = check_real("margin_se", margin_se, low=0, unit="standard errors")
    if margin_se > 0 and method != "max_drop":
        raise ConflictingArgumentsError(f"margin_se is used by method 'max_drop' only, not by {method!r}")
    if "max_drop" in needed:
        kwargs["max_drop"] = check_real("max_drop", max_drop, low=0, unit="accuracy points")
        kwargs["margin_se"] = margin_se
    if "target_macs" in needed:
        kwargs["target_macs"] = check_real("target_macs", target_macs, low=0, high=1, low_open=True,
                                           unit="MACs ratio")
    index = fn(front, F, _normalise(F), **kwargs)
    return front.iloc[index]
