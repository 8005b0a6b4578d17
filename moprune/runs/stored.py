"""What reading a run needs, in data-only files: nothing here unpickles.

- ``progress.json``: after every checkpoint, the generation, the number of evaluations, the
  size of ``evaluations.csv`` at that moment and the result's metadata
  (:meth:`moprune.SearchResult.meta`): ``report --partial`` reads the rows up to that size.
- ``genomes.npz``: the finished run's genomes, one array (bool or float) read with
  ``allow_pickle=False``.
- ``result.json``: written last, it marks the run finished: the metadata, the number of
  evaluations and the size and SHA-256 of ``evaluations.csv`` and ``genomes.npz``, so an edited
  or swapped file is noticed.

:func:`load_result` rebuilds the :class:`moprune.SearchResult` from ``evaluations.csv`` and these.
"""

import hashlib
import json
import os
import zipfile
from typing import Any, Dict, Optional

import numpy as np

from moprune.archive import SearchResult
from moprune.exceptions import MopruneError
from moprune.io import atomic_path
from moprune.runs.config import CONFIG, PathLike, read_config
from moprune.runs.evaluations import EVALUATIONS, archive_from_frame, read_evaluations
from moprune.runs.locking import lock_holder

__all__ = ["GENOMES", "LEGACY_RESULT", "PROGRESS", "RESULT", "is_finished", "load_result", "read_json",
           "write_progress", "write_result"]

RESULT = "result.json"
GENOMES = "genomes.npz"
PROGRESS = "progress.json"
LEGACY_RESULT = "result.pkl"
_RESULT_FORMAT = "moprune-run-result"
_PROGRESS_FORMAT = "moprune-run-progress"
_VERSION = 2


def _write_json(file: str, data: Dict[str, Any]) -> None:
    with atomic_path(file) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def read_json(file: str, fmt: str) -> Dict[str, Any]:
    """A JSON object whose ``format`` is ``fmt`` and ``version`` this moprune's.

    Raises:
        MopruneError: unreadable, not JSON, or another format or version (the file named).
    """
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise MopruneError(f"{file} is unreadable or corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise MopruneError(f"{file} is not a moprune {fmt.split('-', 2)[-1]} file")
    if data.get("version") != _VERSION:
        raise MopruneError(f"{file} has version {data.get('version')!r}; this moprune reads {_VERSION}")
    return data


def _sha256(file: str, size: Optional[int] = None) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        left = size
        while left is None or left > 0:
            block = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def write_progress(path: str, *, generation: int, n_evals: int, csv_size: int, meta: Dict[str, Any]) -> None:
    """Write ``progress.json`` (after a checkpoint)."""
    _write_json(os.path.join(path, PROGRESS), {
        "format": _PROGRESS_FORMAT, "version": _VERSION, "generation": int(generation), "n_evals": int(n_evals),
        "csv_size": int(csv_size), "meta": meta,
    })


def write_result(path: str, result: SearchResult, *, csv_size: int) -> None:
    """Write ``genomes.npz`` then ``result.json`` (the mark of a finished run), each atomically."""
    genomes = [np.asarray(e.genome) for e in result.archive]
    array = np.stack(genomes) if genomes else np.zeros((0, 0), dtype=bool)
    genomes_file = os.path.join(path, GENOMES)
    with atomic_path(genomes_file) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, genomes=array)
            f.flush()
            os.fsync(f.fileno())
    csv_file = os.path.join(path, EVALUATIONS)
    _write_json(os.path.join(path, RESULT), {
        "format": _RESULT_FORMAT, "version": _VERSION, "meta": result.meta(), "n_evals": len(result.archive),
        "evaluations": {"file": EVALUATIONS, "size": int(csv_size), "sha256": _sha256(csv_file, csv_size)},
        "genomes": {"file": GENOMES, "sha256": _sha256(genomes_file)},
    })


def is_finished(path: PathLike) -> bool:
    """Whether run directory ``path`` holds a finished run (its ``result.json``)."""
    return os.path.isfile(os.path.join(os.fspath(path), RESULT))


def _load_finished(path: str, space: Any) -> SearchResult:
    info = read_json(os.path.join(path, RESULT), _RESULT_FORMAT)
    try:
        meta, n, csv, gen = info["meta"], int(info["n_evals"]), info["evaluations"], info["genomes"]
        csv_size, csv_sha, gen_sha = int(csv["size"]), str(csv["sha256"]), str(gen["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MopruneError(f"{os.path.join(path, RESULT)} is malformed ({type(exc).__name__}: {exc})") from None
    csv_file, genomes_file = os.path.join(path, EVALUATIONS), os.path.join(path, GENOMES)
    for file, sha, size in ((csv_file, csv_sha, csv_size), (genomes_file, gen_sha, None)):
        if not os.path.isfile(file):
            raise MopruneError(f"the finished run in {path!r} lacks {os.path.basename(file)}")
        if (size is not None and os.path.getsize(file) < size) or _sha256(file, size) != sha:
            raise MopruneError(f"{file} was changed after the run finished (its SHA-256 differs from the one "
                               f"in {RESULT}); restore it, or start the run over with --force")
    try:
        with np.load(genomes_file, allow_pickle=False) as f:
            genomes = f["genomes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise MopruneError(f"{genomes_file} is unreadable ({type(exc).__name__}: {exc})") from None
    df = read_evaluations(path, size=csv_size, decode=False)
    if len(df) != n or len(genomes) != n:
        raise MopruneError(f"the run in {path!r} records {n} evaluations but {EVALUATIONS} has {len(df)} rows "
                           f"and {GENOMES} {len(genomes)} genomes")
    archive = archive_from_frame(df, meta["objectives"], genomes=list(genomes))
    return SearchResult.from_meta(meta, archive, space=space)


def _load_progress(path: str, space: Any) -> Optional[SearchResult]:
    file = os.path.join(path, PROGRESS)
    if not os.path.isfile(file):
        return None
    info = read_json(file, _PROGRESS_FORMAT)
    try:
        meta, n, csv_size = info["meta"], int(info["n_evals"]), int(info["csv_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MopruneError(f"{file} is malformed ({type(exc).__name__}: {exc})") from None
    df = read_evaluations(path, size=csv_size)
    if len(df) != n:
        raise MopruneError(f"{file} records {n} evaluations but the first {csv_size} bytes of {EVALUATIONS} hold "
                           f"{len(df)} rows")
    return SearchResult.from_meta(meta, archive_from_frame(df, meta["objectives"]), space=space)


def load_result(path: PathLike, *, space: Any = None, partial: bool = False) -> SearchResult:
    """The :class:`moprune.SearchResult` stored in a run directory (``pymoo_result`` is ``None``).

    Only data-only files are read (``result.json``, ``progress.json``, ``evaluations.csv``,
    ``genomes.npz`` with ``allow_pickle=False``): nothing is unpickled, so a run directory from
    someone else is safe to read.

    Args:
        path: The run directory.
        space: The run's space, attached to the result (to rebuild candidates); optional.
        partial: Also accept an unfinished run (running or interrupted): its archive up to the
            last generation that was checkpointed.

    Raises:
        MopruneError: not a run directory, a run still going or unfinished (without ``partial``;
            the message names the running process and suggests ``report --partial``), or a
            corrupt or edited file (named).
    """
    path = os.fspath(path)
    if not os.path.isdir(path) or read_config(path) is None:
        raise MopruneError(f"{path!r} is not a moprune run directory (no {CONFIG})")
    if is_finished(path):
        return _load_finished(path, space)
    if partial:
        result = _load_progress(path, space)
        if result is not None:
            return result
    if os.path.isfile(os.path.join(path, LEGACY_RESULT)):
        raise MopruneError(f"the run in {path!r} was written by an older moprune: its result is a pickle "
                           f"({LEGACY_RESULT}), which moprune no longer reads, since unpickling runs code; "
                           f"its {EVALUATIONS} is plain data (moprune.runs.read_evaluations)")
    if partial:
        raise MopruneError(f"the run in {path!r} has not finished a generation yet")
    holder = lock_holder(path)
    if holder is not None:
        who = f"PID {holder}" if holder > 0 else "another process"
        raise MopruneError(f"the run in {path!r} is still running ({who}); see its progress so far with: "
                           f"moprune report --partial {path}")
    raise MopruneError(f"the run in {path!r} has not finished (no {RESULT}); continue it with: moprune search "
                       f"--resume {path} (or see it so far with: moprune report --partial {path})")
