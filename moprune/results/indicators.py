"""Hypervolume of a front, its growth over a run, and comparisons of algorithms over seeds."""

import math
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from moprune.archive import SearchResult
from moprune.exceptions import MopruneValueError, invalid_value
from moprune.results.frame import DEFAULT_OBJECTIVES, _as_frame, _resolve_objectives, objective_matrix, pareto_front
from moprune.validation import check_int

__all__ = ["compare", "default_grid", "hypervolume", "hypervolume_curve"]

def _check_ref_point(ref_point, m):
    if ref_point is None:
        return np.ones(m)
    try:
        ref = np.asarray(ref_point, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise invalid_value("ref_point", f"{m} positive numbers", ref_point) from None
    if ref.shape != (m,) or not np.all(np.isfinite(ref)) or np.any(ref <= 0):
        raise invalid_value("ref_point", f"{m} positive numbers (one per objective)", ref_point)
    return ref


def hypervolume(front: Union[SearchResult, pd.DataFrame, np.ndarray], *, ref_point: Optional[Sequence[float]] = None,
                objectives: Optional[Sequence[str]] = None) -> float:
    """Hypervolume of a front with fixed normalisation, through pymoo's ``HV``.

    Each objective is divided by its ``ref_point`` coordinate (ideal 0, nadir ``ref_point``), so
    the value is the fraction of the box ``[0, ref_point]`` the front dominates, in [0, 1].
    Every built-in objective (error, MACs and params ratios, density) lies in [0, 1], so the
    default reference point ``(1, ..., 1)`` gives numbers comparable across runs and
    algorithms. Points outside the box add nothing.

    Args:
        front: A SearchResult, a frame (its front is taken) or an ``n x m`` array of minimised
            objective values.
        ref_point: The nadir of the box, one positive number per objective (default all ones).
        objectives: Objective names for frames (default: the run's).

    Returns:
        A float in [0, 1] (0 for an empty front).
    """
    if isinstance(front, (SearchResult, pd.DataFrame)):
        front_df = pareto_front(front, objectives=objectives)
        F = objective_matrix(front_df, front_df.attrs["front_objectives"])
    else:
        if objectives is not None:
            raise MopruneValueError("objectives is only used with a SearchResult or a DataFrame")
        F = np.asarray(front, dtype=float)
        if F.ndim != 2 or F.shape[1] == 0:
            raise invalid_value("front", "an n x m array of objective values", f"shape {F.shape}")
    ref = _check_ref_point(ref_point, F.shape[1])
    F = F[np.isfinite(F).all(axis=1)]
    if len(F) == 0:
        return 0.0
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=np.ones(F.shape[1]))(F / ref))


def _check_grid(grid):
    try:
        g = np.asarray(grid)
    except (TypeError, ValueError):
        g = None
    if g is None or g.ndim != 1 or len(g) == 0 or not np.issubdtype(g.dtype, np.integer) \
            or np.any(g < 1) or np.any(np.diff(g) <= 0):
        raise invalid_value("grid", "a strictly increasing sequence of positive ints", grid)
    return g.astype(int)


def default_grid(n_max, n_points=20):
    """``n_points`` evenly spaced evaluation counts from ``n_max / n_points`` to ``n_max`` (ints)."""
    n_points = check_int("n_points", n_points, low=1)
    if n_max < 1:
        return np.array([], dtype=int)
    return np.unique(np.ceil(np.linspace(n_max / n_points, n_max, n_points)).astype(int))


def hypervolume_curve(result, *, grid=None, n_points=20, ref_point=None, objectives=None,
                      count_cached=True):
    """Hypervolume of everything one run had evaluated after ``n`` evaluations, for ``n`` in a grid.

    Every candidate counts as an evaluation (a weighted-sum GA's rejected candidates too; failed
    ones as well, since they were spent), so runs of different algorithms line up by budget.

    Args:
        result: A SearchResult or a frame from :func:`to_frame`.
        grid: Evaluation counts (default :func:`default_grid` over the run's length).
        n_points: Grid size when ``grid`` is ``None``.
        ref_point: See :func:`hypervolume`.
        objectives: Objective names (default: the run's).
        count_cached: Count candidates served from the evaluation cache (as
            :attr:`SearchResult.n_evals` does); ``False`` counts only evaluations actually run.

    Returns:
        A DataFrame with columns ``n_evals`` and ``hv`` (``nan`` past the end of the run).
    """
    df = _as_frame(result)
    objectives = _resolve_objectives(df, objectives)
    if not count_cached and "cached" in df.columns:
        df = df[~df["cached"].to_numpy(dtype=bool)]
    grid = default_grid(len(df), n_points) if grid is None else _check_grid(grid)
    values = [hypervolume(df.iloc[:k], ref_point=ref_point, objectives=objectives)
              if k <= len(df) else math.nan for k in grid]
    return pd.DataFrame({"n_evals": np.asarray(grid, dtype=int), "hv": np.asarray(values, dtype=float)})


def compare(results: Mapping[str, Any], *, grid: Optional[Sequence[int]] = None, n_points: int = 20,
            ref_point: Optional[Sequence[float]] = None, objectives: Optional[Sequence[str]] = None,
            count_cached: bool = True) -> pd.DataFrame:
    """Hypervolume against evaluations spent, mean and standard deviation over seeds, per algorithm.

    Example:
        >>> compare({"nsga2": [run0, run1], "ga-weighted": [run2, run3]})

    Args:
        results: A mapping ``{algorithm label: runs}``, ``runs`` being one SearchResult (or
            frame) or a sequence of them (e.g. one per seed).
        grid: Evaluation counts shared by every run (default: :func:`default_grid` up to the
            longest run).
        n_points: Grid size when ``grid`` is ``None``.
        ref_point: See :func:`hypervolume` (default all ones on normalised objectives).
        objectives: Objective names to compare in; default: the objectives every run has (in
            the first run's order), e.g. ``("error", "macs")`` for NSGA-II on (error, macs)
            against a weighted-sum GA that also records its score.
        count_cached: See :func:`hypervolume_curve`.

    Returns:
        A long DataFrame with columns ``algorithm, n_evals, hv_mean, hv_std, n_runs``: at each
        grid point, over the runs that reached that many evaluations (``hv_std`` is the sample
        standard deviation, ``nan`` for a single run).

    Raises:
        MopruneValueError: empty or malformed ``results``, or runs sharing no objective and no
            ``objectives`` given.
    """
    if not isinstance(results, Mapping) or len(results) == 0:
        raise invalid_value("results", "a non-empty mapping {algorithm: run or list of runs}",
                            type(results).__name__)
    frames = {}
    for label, runs in results.items():
        if isinstance(runs, (SearchResult, pd.DataFrame)):
            runs = [runs]
        try:
            runs = list(runs)
        except TypeError:
            raise invalid_value(f"results[{label!r}]", "a SearchResult, a frame or a list of them",
                                type(runs).__name__) from None
        if not runs:
            raise invalid_value(f"results[{label!r}]", "at least one run", runs)
        frames[label] = [_as_frame(run, f"results[{label!r}]") for run in runs]
    if objectives is None:
        seen = [tuple(f.attrs.get("objectives") or DEFAULT_OBJECTIVES) for fs in frames.values() for f in fs]
        objectives = tuple(name for name in seen[0] if all(name in other for other in seen[1:]))
        if not objectives:
            raise MopruneValueError(
                f"the runs share no objective ({sorted(set(seen))}); pass objectives=... to compare "
                "them in one space, e.g. objectives=('error', 'macs')")
    if grid is None:
        lengths = [len(f) if count_cached or "cached" not in f.columns
                   else int((~f["cached"].to_numpy(dtype=bool)).sum())
                   for fs in frames.values() for f in fs]
        grid = default_grid(max(lengths), n_points)
    else:
        grid = _check_grid(grid)
    out = []
    for label, fs in frames.items():
        curves = np.array([hypervolume_curve(f, grid=grid, ref_point=ref_point, objectives=objectives,
                                             count_cached=count_cached)["hv"].to_numpy() for f in fs])
        for j, k in enumerate(grid):
            column = curves[:, j]
            column = column[np.isfinite(column)]
            n = len(column)
            out.append({
                "algorithm": label,
                "n_evals": int(k),
                "hv_mean": float(column.mean()) if n else math.nan,
                "hv_std": float(column.std(ddof=1)) if n > 1 else math.nan,
                "n_runs": n,
            })
    df = pd.DataFrame(out, columns=["algorithm", "n_evals", "hv_mean", "hv_std", "n_runs"])
    df.attrs["objectives"] = list(objectives)
    return df
