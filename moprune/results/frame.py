"""The archive as a DataFrame, objective columns, and the Pareto front."""

import hashlib
import math
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from moprune.archive import SearchResult
from moprune.exceptions import invalid_value
from moprune.validation import check_bool

__all__ = ["DEFAULT_OBJECTIVES", "genome_hash", "objective_matrix", "pareto_front", "to_frame"]

DEFAULT_OBJECTIVES = ("error", "macs")

# name -> (column, offset, sign): value = offset + sign * df[column]
_OBJECTIVE_COLUMNS = {
    "error": ("error", 0.0, 1.0),
    "accuracy": ("accuracy", 1.0, -1.0),
    "macs": ("macs_ratio", 0.0, 1.0),
    "macs_ratio": ("macs_ratio", 0.0, 1.0),
    "params": ("params_ratio", 0.0, 1.0),
    "params_ratio": ("params_ratio", 0.0, 1.0),
    "sparsity": ("sparsity", 1.0, -1.0),
    "density": ("sparsity", 1.0, -1.0),
    "accuracy_drop": ("accuracy_drop", 0.0, 1.0),
}

_BASE_COLUMNS = [
    "generation", "accuracy", "error", "accuracy_drop", "macs", "macs_ratio", "params",
    "params_ratio", "sparsity", "feasible",
]
_TAIL_COLUMNS = [
    "plan_key", "genome_hash", "cached", "screened", "confirmed", "subset_accuracy", "confirmed_accuracy",
    "confirm_images", "seconds", "algorithm", "seed", "error_message", "genome",
]


_RESERVED = set(_BASE_COLUMNS) | set(_TAIL_COLUMNS)


def genome_hash(genome):
    """A short (12 hex digits) SHA-1 of a genome's bytes; equal genomes have equal hashes."""
    if genome is None:
        return None
    data = np.ascontiguousarray(np.asarray(genome))
    return hashlib.sha1(data.tobytes()).hexdigest()[:12]


def to_frame(result: SearchResult) -> pd.DataFrame:
    """One row per candidate the search asked for, in evaluation order.

    Args:
        result: A :class:`~moprune.archive.SearchResult`.

    Returns:
        A DataFrame indexed by ``eval`` (0-based position in the archive) with columns
        ``generation, accuracy, error, accuracy_drop, macs, macs_ratio, params, params_ratio,
        sparsity, feasible``, one ``objective_<name>`` column per objective, the plan summary
        (e.g. ``"kept/conv1"`` or ``"sparsity/fc1"``), then ``plan_key, genome_hash, cached,
        screened, confirmed, subset_accuracy, confirmed_accuracy, seconds, algorithm, seed,
        error_message, genome`` (``screened``: measurement stopped early on a dominated
        candidate, whose ``accuracy`` is then an upper bound; ``confirmed``: measured on the
        confirmation images too, see :class:`moprune.archive.Evaluation`).
        ``error`` is ``1 - accuracy`` and
        ``accuracy_drop`` is ``100 * (base_accuracy - accuracy)`` in points. ``df.attrs`` holds
        ``base_accuracy``, ``base_macs``, ``base_params``, ``objectives``, ``algorithm``,
        ``seed`` and ``max_accuracy_drop`` (and ``base_summary`` when the space can tell it),
        which :func:`pareto_front`, :func:`pick` and the plots read. A summary key that would
        overwrite one of these columns is stored as ``summary/<key>``.

    Raises:
        MopruneValueError: ``result`` is not a SearchResult.
    """
    if not isinstance(result, SearchResult):
        raise invalid_value("result", "a moprune SearchResult", type(result).__name__)
    objectives = tuple(result.objectives)
    base_accuracy = float(result.base_accuracy)
    rows, summary_columns = [], {}
    for ev in result.archive:
        accuracy = float(ev.accuracy)
        row = {
            "generation": int(ev.generation),
            "accuracy": accuracy,
            "error": 1.0 - accuracy,
            "accuracy_drop": 100.0 * (base_accuracy - accuracy),
            "macs": float(ev.macs),
            "macs_ratio": float(ev.macs_ratio),
            "params": float(ev.params),
            "params_ratio": float(ev.params_ratio),
            "sparsity": float(ev.sparsity),
            "feasible": bool(ev.feasible),
        }
        values = tuple(ev.objectives) if ev.objectives is not None else ()
        for i, name in enumerate(objectives):
            row[f"objective_{name}"] = float(values[i]) if i < len(values) else math.nan
        for key, value in (ev.summary or {}).items():
            if key in _RESERVED or str(key).startswith("objective_"):
                key = f"summary/{key}"
            summary_columns.setdefault(key, None)
            row[key] = value
        row.update({
            "plan_key": ev.plan_key,
            "genome_hash": genome_hash(ev.genome),
            "cached": bool(ev.cached),
            "screened": bool(getattr(ev, "screened", False)),
            "confirmed": bool(getattr(ev, "confirmed", False)),
            "subset_accuracy": float(getattr(ev, "accuracy_on_subset", accuracy)),
            "confirmed_accuracy": float(getattr(ev, "confirmed_accuracy", math.nan)),
            "confirm_images": int(getattr(ev, "confirm_images", 0)),
            "seconds": float(ev.seconds),
            "algorithm": result.algorithm,
            "seed": result.seed,
            "error_message": ev.error,
            "genome": None if ev.genome is None else np.asarray(ev.genome),
        })
        rows.append(row)
    columns = (_BASE_COLUMNS + [f"objective_{name}" for name in objectives] + list(summary_columns)
               + _TAIL_COLUMNS)
    df = pd.DataFrame(rows, columns=columns)
    df.index.name = "eval"
    df.attrs.update({
        "base_accuracy": base_accuracy,
        "base_macs": float(result.base_macs),
        "base_params": float(result.base_params),
        "objectives": list(objectives),
        "algorithm": result.algorithm,
        "seed": result.seed,
        "max_accuracy_drop": result.max_accuracy_drop,
    })
    base_summary = _base_summary(result.space)
    if base_summary is not None:
        df.attrs["base_summary"] = base_summary
    return df


def _base_summary(space):
    """The summary of the unpruned plan, when the space can decode its original genome."""
    if space is None:
        return None
    try:
        return dict(space.decode(space.original()).summary)
    except Exception:  # a space that cannot describe its original is not an error here
        return None


def _as_frame(data, name="result"):
    if isinstance(data, SearchResult):
        return to_frame(data)
    if isinstance(data, pd.DataFrame):
        return data
    raise invalid_value(name, "a SearchResult or a DataFrame from moprune.results.to_frame",
                        type(data).__name__)


def _resolve_objectives(df, objectives, *, key="objectives"):
    if objectives is None:
        objectives = df.attrs.get("front_objectives") or df.attrs.get(key) or DEFAULT_OBJECTIVES
    if isinstance(objectives, str):
        objectives = (objectives,)
    objectives = tuple(objectives)
    if len(objectives) == 0:
        raise invalid_value("objectives", "a non-empty sequence of objective names", objectives)
    return objectives


def objective_matrix(df, objectives):
    """The ``n x m`` matrix of minimised objective values of ``df``'s rows.

    Args:
        df: A frame from :func:`to_frame` (or any subset of its rows).
        objectives: Objective names (see the module docstring for the mapping to columns).

    Raises:
        MopruneValueError: an objective that maps to no column of ``df``.
    """
    columns = []
    for name in objectives:
        if name in _OBJECTIVE_COLUMNS and _OBJECTIVE_COLUMNS[name][0] in df.columns:
            column, offset, sign = _OBJECTIVE_COLUMNS[name]
            columns.append(offset + sign * df[column].to_numpy(dtype=float))
        elif f"objective_{name}" in df.columns:
            columns.append(df[f"objective_{name}"].to_numpy(dtype=float))
        else:
            known = sorted(set(_OBJECTIVE_COLUMNS) | {c[len("objective_"):] for c in df.columns
                                                       if str(c).startswith("objective_")})
            raise invalid_value("objectives", f"names among {known}", name)
    return np.column_stack(columns) if columns else np.zeros((len(df), 0))


def _valid_rows(df, objectives, feasible_only):
    """Rows that count: evaluated without error and in full, finite objectives, (feasible), unique plan.

    A screened row's accuracy is only an upper bound: it is never on a front.
    """
    mask = np.ones(len(df), dtype=bool)
    if "error_message" in df.columns:
        mask &= df["error_message"].isna().to_numpy()
    if "screened" in df.columns:
        mask &= ~df["screened"].to_numpy(dtype=bool)
    if feasible_only and "feasible" in df.columns:
        mask &= df["feasible"].to_numpy(dtype=bool)
    F = objective_matrix(df, objectives)
    mask &= np.isfinite(F).all(axis=1)
    valid = df[mask]
    F = F[mask]
    if "plan_key" in valid.columns:
        keep = ~valid["plan_key"].duplicated().to_numpy()
        valid, F = valid[keep], F[keep]
    return valid, F


def pareto_front(result_or_frame: Union[SearchResult, pd.DataFrame], *, objectives: Optional[Sequence[str]] = None,
                 feasible_only: bool = True) -> pd.DataFrame:
    """The non-dominated candidates, found with pymoo's ``NonDominatedSorting``.

    Failed candidates (``error_message`` set) and repeated plans (same ``plan_key``, the first
    evaluation kept) are dropped first; so are infeasible ones when ``feasible_only`` (a
    candidate is infeasible only when the search had a constraint, so this filter changes
    nothing for unconstrained runs).

    Args:
        result_or_frame: A SearchResult or a frame from :func:`to_frame`.
        objectives: Objective names, all minimised; default: the run's objectives (those a
            front was computed with, when given a front).
        feasible_only: Keep only rows whose ``feasible`` is true.

    Returns:
        The front's rows (same columns and attrs as the frame, ``attrs["front_objectives"]``
        set), sorted by MACs ratio ascending when that column exists, else by the first
        objective.
    """
    df = _as_frame(result_or_frame, "result_or_frame")
    objectives = _resolve_objectives(df, objectives)
    check_bool("feasible_only", feasible_only)
    valid, F = _valid_rows(df, objectives, feasible_only)
    if len(valid):
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

        index = np.sort(np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True), dtype=int))
        front, F = valid.iloc[index], F[index]
    else:
        front = valid
    front = front.copy()
    order_columns = [f"_o{i}" for i in range(len(objectives))]
    keys = pd.DataFrame(F, columns=order_columns, index=front.index) if len(front) else None
    if keys is not None:
        if "macs_ratio" in front.columns:
            keys.insert(0, "_macs", front["macs_ratio"].to_numpy(dtype=float))
        order = np.lexsort([keys[c].to_numpy() for c in reversed(list(keys.columns))])
        front = front.iloc[order]
    front.attrs["front_objectives"] = list(objectives)
    return front
