"""``evaluations.csv``: one row per candidate, appended after every generation.

The columns are those of :func:`moprune.results.to_frame` (index ``eval``), the genome written as
a string: ``"0110..."`` for bits, ``";"``-joined floats (``repr``, so exact) otherwise. The file
is plain data: reading it runs no code, and everything a run's archive holds can be rebuilt
from it (:func:`archive_from_frame`), which :func:`moprune.runs.load_result` does.
"""

import io
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from moprune.archive import Evaluation, SearchResult
from moprune.evaluation.cache import EvalRecord
from moprune.exceptions import MopruneError, invalid_value
from moprune.results import to_frame
from moprune.runs.config import PathLike

__all__ = ["EVALUATIONS", "append_rows", "archive_from_frame", "decode_genome", "encode_genome", "frame_rows",
           "read_evaluations", "records_from_frame"]

EVALUATIONS = "evaluations.csv"

_STR_COLUMNS = {"genome": str, "plan_key": str, "genome_hash": str, "error_message": str, "algorithm": str}
_SUMMARY_PREFIX = "summary/"
_NO_META = {"objectives": (), "algorithm": "", "seed": 0, "base_accuracy": 0.0, "base_macs": 0.0,
            "base_params": 0.0, "max_accuracy_drop": None}


def encode_genome(genome: Sequence) -> str:
    """A genome as one CSV-safe string: ``"0110..."`` for bits, ``";"``-joined floats otherwise."""
    g = np.asarray(genome)
    if g.dtype == bool:
        return "".join("1" if b else "0" for b in g)
    return ";".join(repr(float(v)) for v in g)


def decode_genome(text: str) -> np.ndarray:
    """Inverse of :func:`encode_genome`.

    Raises:
        MopruneValueError: ``text`` is neither a string of ``0``/``1`` nor ``;``-separated numbers.
    """
    text = str(text)
    if text and set(text) <= {"0", "1"}:
        return np.array([c == "1" for c in text], dtype=bool)
    try:
        return np.array([float(v) for v in text.split(";")], dtype=float)
    except ValueError:
        raise invalid_value("genome", "a string of 0/1 or ';'-separated numbers", text[:40]) from None


def frame_rows(meta: Mapping[str, Any], archive: Sequence[Evaluation], start: int = 0,
               columns: Optional[List[str]] = None) -> pd.DataFrame:
    """The rows of ``archive[start:]`` as written to ``evaluations.csv`` (index: position in the archive).

    Args:
        meta: The run's :meth:`moprune.SearchResult.meta`.
        archive: The whole archive.
        start: The first evaluation not written yet.
        columns: The file's columns (its header), to write later rows in the same order.
    """
    df = to_frame(SearchResult.from_meta(meta, archive[start:]))
    df.index = df.index + start
    df["genome"] = [encode_genome(g) for g in df["genome"]]
    if columns is not None:
        df = df.reindex(columns=columns)
    return df


def append_rows(file: PathLike, df: pd.DataFrame, *, header: bool) -> int:
    """Append ``df`` to ``file``, flushed and fsynced; returns the file's size afterwards."""
    text = df.to_csv(header=header)
    with open(file, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def read_evaluations(path: PathLike, *, size: Optional[int] = None, file: Optional[str] = None,
                     decode: bool = True) -> pd.DataFrame:
    """``evaluations.csv`` of a run directory as a DataFrame indexed by ``eval``.

    Args:
        path: The run directory.
        size: Read only the first ``size`` bytes (what a checkpoint recorded); default all.
        file: Another file name in ``path`` with the same columns (e.g. ``evaluations.previous.csv``).
        decode: Decode the ``genome`` column into arrays.

    Raises:
        MopruneError: no such file, an empty one, or one that is not such a table (named).
    """
    file = os.path.join(os.fspath(path), file or EVALUATIONS)
    if not os.path.isfile(file) or os.path.getsize(file) == 0:
        raise MopruneError(f"{file} does not exist or is empty")
    try:
        with open(file, "rb") as f:
            raw = f.read() if size is None else f.read(size)
        if size is not None and len(raw) < size:
            raise MopruneError(f"{file} is shorter ({len(raw)} bytes) than the run recorded ({size} bytes); "
                               "it was edited or truncated")
        df = pd.read_csv(io.StringIO(raw.decode("utf-8")), index_col="eval", dtype=_STR_COLUMNS)
        if decode:
            df["genome"] = [decode_genome(g) for g in df["genome"]]
    except MopruneError:
        raise
    except (ValueError, KeyError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise MopruneError(f"{file} is not a readable table of evaluations ({type(exc).__name__}: {exc})") from None
    return df


def _summary_columns(df: pd.DataFrame) -> Dict[str, str]:
    """``{column: summary key}`` of the plan-summary columns of an evaluations frame."""
    fixed = set(to_frame(SearchResult.from_meta(_NO_META, [])).columns)
    out = {}
    for column in df.columns:
        if column in fixed or str(column).startswith("objective_"):
            continue
        key = str(column)
        out[column] = key[len(_SUMMARY_PREFIX):] if key.startswith(_SUMMARY_PREFIX) else key
    return out


def _plain(value: Any) -> Any:
    """A numpy scalar as a Python one."""
    return value.item() if isinstance(value, np.generic) else value


def _summaries(df: pd.DataFrame) -> List[Dict[str, Any]]:
    columns = _summary_columns(df)
    values = {column: df[column].to_numpy() for column in columns}
    out = []
    for i in range(len(df)):
        summary = {}
        for column, key in columns.items():
            value = _plain(values[column][i])
            if isinstance(value, float) and math.isnan(value):
                continue  # a candidate that could not be decoded has no summary
            summary[key] = value
        out.append(summary)
    return out


def _message(value: Any) -> Optional[str]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def archive_from_frame(df: pd.DataFrame, objectives: Sequence[str],
                       genomes: Optional[Sequence[np.ndarray]] = None) -> List[Evaluation]:
    """Rebuild the archive from an evaluations frame (as :func:`read_evaluations` returns it).

    Args:
        df: The frame, genomes decoded (unless ``genomes`` is given).
        objectives: The run's objective names (its ``objective_<name>`` columns, in order).
        genomes: The genomes, one per row, e.g. from ``genomes.npz`` (default: ``df["genome"]``).

    Raises:
        MopruneError: a column the archive needs is missing (named).
    """
    needed = ["generation", "accuracy", "macs", "params", "macs_ratio", "params_ratio", "sparsity", "feasible",
              "plan_key", "cached", "seconds", "error_message"] + [f"objective_{name}" for name in objectives]
    missing = [c for c in needed if c not in df.columns]
    if missing or (genomes is None and "genome" not in df.columns):
        raise MopruneError(f"the evaluations table lacks the column(s) {missing or ['genome']}")
    genomes = list(df["genome"]) if genomes is None else list(genomes)
    if len(genomes) != len(df):
        raise MopruneError(f"{len(genomes)} genomes for {len(df)} evaluations")
    objective_values = df[[f"objective_{name}" for name in objectives]].to_numpy(dtype=float)
    summaries = _summaries(df)
    archive = []
    screened = df["screened"].to_numpy(dtype=bool) if "screened" in df.columns else np.zeros(len(df), dtype=bool)
    subset, confirmed, confirm_images = _confirmation_columns(df)
    for i, row in enumerate(df[needed[:12]].itertuples(index=False)):
        archive.append(Evaluation(
            genome=np.asarray(genomes[i]),
            plan_key=str(row.plan_key),
            summary=summaries[i],
            objectives=tuple(float(v) for v in objective_values[i]),
            accuracy=float(row.accuracy),
            macs=float(row.macs),
            params=float(row.params),
            macs_ratio=float(row.macs_ratio),
            params_ratio=float(row.params_ratio),
            sparsity=float(row.sparsity),
            feasible=bool(row.feasible),
            generation=int(row.generation),
            cached=bool(row.cached),
            seconds=float(row.seconds),
            error=_message(row.error_message),
            screened=bool(screened[i]),  # runs written before screening existed have no such column
            subset_accuracy=float(subset[i]),
            confirmed_accuracy=float(confirmed[i]),
            confirm_images=int(confirm_images[i]),
        ))
    return archive


def _confirmation_columns(df):
    """``subset_accuracy``, ``confirmed_accuracy`` and ``confirm_images`` (``nan`` / 0 where absent: older runs)."""
    nan = np.full(len(df), np.nan)
    subset = df["subset_accuracy"].to_numpy(dtype=float) if "subset_accuracy" in df.columns else nan
    confirmed = df["confirmed_accuracy"].to_numpy(dtype=float) if "confirmed_accuracy" in df.columns else nan
    images = (df["confirm_images"].fillna(0).to_numpy(dtype=np.int64) if "confirm_images" in df.columns
              else np.zeros(len(df), dtype=np.int64))
    return subset, confirmed, images


def records_from_frame(df: pd.DataFrame) -> List[EvalRecord]:
    """The evaluation-cache records an evaluations frame holds (one per plan measured).

    Rows served from the cache and candidates that could not be decoded are left out; what is
    left is what the evaluator measured, so a run started over with these records in its cache
    finds the same accuracies without running the candidates again.
    """
    summaries = _summaries(df)
    screened = df["screened"].to_numpy(dtype=bool) if "screened" in df.columns else np.zeros(len(df), dtype=bool)
    subset, confirmed, confirm_images = _confirmation_columns(df)
    records = {}
    for i, row in enumerate(df[["plan_key", "accuracy", "seconds", "cached", "error_message"]]
                            .itertuples(index=False)):
        key = str(row.plan_key)
        if bool(row.cached) or key == "<undecodable>" or key in records:
            continue
        # the evaluator's record: accuracy on the subset, and over both sets of images where confirmed
        accuracy = float(subset[i]) if np.isfinite(subset[i]) else float(row.accuracy)
        records[key] = EvalRecord(plan_key=key, accuracy=accuracy, seconds=float(row.seconds),
                                  error=_message(row.error_message), summary=summaries[i],
                                  screened=bool(screened[i]),
                                  confirmed_accuracy=float(confirmed[i]) if np.isfinite(confirmed[i]) else None,
                                  confirm_images=int(confirm_images[i]) if np.isfinite(confirmed[i])
                                  and confirm_images[i] > 0 else None)
    return list(records.values())
