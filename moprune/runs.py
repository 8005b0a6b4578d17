"""Run directories: a search that writes its evaluations as it goes and survives being killed.

A run directory holds:

- ``config.json``: the resolved settings of the run (two runs are "the same run" when their
  configs are equal); written once, atomically.
- ``evaluations.csv``: one row per candidate (the columns of :func:`moprune.results.to_frame`,
  the genome as a string of ``0``/``1`` or ``;``-separated floats), appended after every
  generation, flushed and fsynced.
- ``checkpoint.pkl``: written atomically after every generation: the pymoo algorithm (its
  population and ``random_state``), the archive, the evaluator's cache and counters, the
  generation, the size of ``evaluations.csv`` at that moment and the global random states.
  The model, the space, the problem and the evaluator are *not* in it: they are pickled as
  references and the caller rebuilds them from ``config.json`` (the evaluator's data are
  re-attached by construction).
- ``result.pkl``: the finished run's archive and base values (:func:`load_result`).

A run killed at any moment (SIGKILL included) is continued by :func:`run_search` with
``resume=True``: ``evaluations.csv`` is cut back to the size recorded in the last checkpoint,
and the generation that was interrupted is run again from the checkpointed algorithm, cache and
random states. Evaluation is deterministic per plan, so the archive ends equal to that of an
uninterrupted run with the same seed.

Example:
    >>> prepare_run("runs/a", config)
    >>> result = run_search("runs/a", problem, "nsga2", pop_size=20, n_gen=10, seed=0)
"""

import contextlib
import io
import json
import os
import pickle
import random

import numpy as np
import pandas as pd
import torch

from moprune.archive import SearchResult
from moprune.exceptions import MopruneError, invalid_value
from moprune.io import atomic_path
from moprune.logging import get_logger
from moprune.results import to_frame
from moprune.searching import search

__all__ = [
    "CHECKPOINT", "CONFIG", "EVALUATIONS", "RESULT", "RUN_FILES", "config_differences", "decode_genome",
    "encode_genome", "load_checkpoint", "load_result", "prepare_run", "read_config", "read_evaluations",
    "run_search",
]

logger = get_logger("runs")

CONFIG = "config.json"
EVALUATIONS = "evaluations.csv"
CHECKPOINT = "checkpoint.pkl"
RESULT = "result.pkl"
RUN_FILES = (CONFIG, EVALUATIONS, CHECKPOINT, RESULT, ".lock")
"""Files a run owns (``--force`` removes these and nothing else, plus report outputs)."""

_FORMAT = "moprune-run"
_VERSION = 1
_META_KEYS = ("objectives", "algorithm", "seed", "base_accuracy", "base_macs", "base_params",
              "max_accuracy_drop")


# ----------------------------------------------------------------------------- config
def read_config(path):
    """The ``config.json`` of run directory ``path``, or ``None`` when there is none.

    Raises:
        MopruneError: the file exists but is not valid JSON.
    """
    file = os.path.join(os.fspath(path), CONFIG)
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise MopruneError(f"{file} is not a readable run config: {exc}") from None
    if not isinstance(config, dict):
        raise MopruneError(f"{file} is not a run config (a JSON object)")
    return config


def _normal(config):
    """``config`` as it reads back from JSON (tuples become lists...)."""
    return json.loads(json.dumps(config, sort_keys=True))


def config_differences(a, b):
    """Sorted keys whose values differ between two configs (missing keys count)."""
    a, b = _normal(a), _normal(b)
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


def prepare_run(path, config, *, resume=False, force=False):
    """Make ``path`` the run directory of ``config``.

    - A new or empty folder: ``config.json`` is written; returns ``"new"``.
    - ``force``: the run files (and report outputs) of a previous run are removed first.
    - ``resume``: the folder must hold a run whose config equals ``config``; returns ``"resume"``.
    - Otherwise a folder that already holds a run (the same or a different one) is refused.

    Args:
        path: The run directory.
        config: A JSON-serialisable dict of the resolved settings.
        resume: Continue the run stored there.
        force: Start over, discarding what is there.

    Returns:
        ``"new"`` or ``"resume"``.

    Raises:
        MopruneError: the folder holds another run (the message names the differing keys), no
            run to resume, or files that are not a run's.
    """
    path = os.fspath(path)
    if not isinstance(config, dict):
        raise invalid_value("config", "a dict of settings", type(config).__name__)
    if resume and force:
        raise invalid_value("resume, force", "at most one of them", (resume, force))
    stored = read_config(path)
    if resume:
        if stored is None:
            raise MopruneError(f"there is no run to resume in {path!r} (no {CONFIG})")
        diff = config_differences(stored, config)
        if diff:
            raise MopruneError(f"{path!r} holds a different run: its settings differ in {diff}")
        return "resume"
    if os.path.isdir(path) and os.listdir(path):
        if force:
            for name in RUN_FILES + _REPORT_FILES:
                if os.path.isfile(os.path.join(path, name)):
                    os.remove(os.path.join(path, name))
        elif stored is None:
            raise MopruneError(f"{path!r} is not empty and holds no moprune run; choose another folder "
                               "or pass --force")
        else:
            diff = config_differences(stored, config)
            what = (f"a different run (its settings differ in {diff})" if diff else "this run already")
            raise MopruneError(f"{path!r} holds {what}; pass --resume to continue it or --force to "
                               "start over")
    os.makedirs(path, exist_ok=True)
    with atomic_path(os.path.join(path, CONFIG)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(_normal(config), f, indent=2, sort_keys=True)
            f.write("\n")
    return "new"


_REPORT_FILES = ("pareto.csv", "pareto.png", "convergence.png", "retrained.pt", "pruned.pt", "pruned.onnx")


# ----------------------------------------------------------------------------- evaluations.csv
def encode_genome(genome):
    """A genome as one CSV-safe string: ``"0110..."`` for bits, ``";"``-joined floats otherwise."""
    g = np.asarray(genome)
    if g.dtype == bool:
        return "".join("1" if b else "0" for b in g)
    return ";".join(repr(float(v)) for v in g)


def decode_genome(text):
    """Inverse of :func:`encode_genome`."""
    text = str(text)
    if ";" in text or "." in text or "e" in text:
        return np.array([float(v) for v in text.split(";")], dtype=float)
    return np.array([c == "1" for c in text], dtype=bool)


def _rows(problem, meta, start, columns):
    """The frame rows of ``problem.archive[start:]``, indexed by their position in the archive."""
    result = SearchResult(archive=problem.archive[start:], space=None, **meta)
    df = to_frame(result)
    df.index = df.index + start
    df["genome"] = [encode_genome(g) for g in df["genome"]]
    if columns is not None:
        df = df.reindex(columns=columns)
    return df


def _append(file, df, header):
    """Append ``df`` to ``file``, flushed and fsynced; returns the file size afterwards."""
    text = df.to_csv(header=header)
    with open(file, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def read_evaluations(path):
    """``evaluations.csv`` of a run directory as a DataFrame indexed by ``eval`` (genomes decoded).

    Raises:
        MopruneError: no such file.
    """
    file = os.path.join(os.fspath(path), EVALUATIONS)
    if not os.path.isfile(file) or os.path.getsize(file) == 0:
        raise MopruneError(f"{file} does not exist or is empty")
    df = pd.read_csv(file, index_col="eval", dtype={"genome": str, "plan_key": str, "genome_hash": str,
                                                    "error_message": str, "algorithm": str})
    df["genome"] = [decode_genome(g) for g in df["genome"]]
    return df


# ----------------------------------------------------------------------------- checkpoint
class _Pickler(pickle.Pickler):
    """Pickles the live objects of a run (problem, space, evaluator, model) as references."""

    def __init__(self, file, refs):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._refs = {id(obj): name for name, obj in refs.items() if obj is not None}

    def persistent_id(self, obj):
        return self._refs.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, refs):
        super().__init__(file)
        self._refs = refs

    def persistent_load(self, pid):
        if pid not in self._refs or self._refs[pid] is None:
            raise pickle.UnpicklingError(f"the checkpoint refers to {pid!r}, which this run does not have")
        return self._refs[pid]


def _refs(problem, run_problem):
    return {"problem": problem, "run_problem": None if run_problem is problem else run_problem,
            "space": problem.space, "model": getattr(problem.space, "model", None),
            "evaluator": problem.evaluator}


def _rng_states():
    return {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}


def _set_rng_states(states):
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])


def _save_checkpoint(file, *, algorithm, problem, run_problem, meta, csv_size, columns):
    buffer = io.BytesIO()
    _Pickler(buffer, _refs(problem, run_problem)).dump(algorithm)
    evaluator = problem.evaluator
    state = {
        "format": _FORMAT,
        "version": _VERSION,
        "generation": int(problem.generation),
        "algorithm": buffer.getvalue(),
        "archive": list(problem.archive),
        "cache": evaluator.cache.state_dict(),
        "counters": evaluator.counters() if hasattr(evaluator, "counters") else None,
        "meta": meta,
        "csv_size": int(csv_size),
        "csv_columns": list(columns),
        "rng": _rng_states(),
    }
    with atomic_path(file) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())


def load_checkpoint(path):
    """The checkpoint of run directory ``path`` as a dict (the algorithm still pickled), or ``None``.

    Raises:
        MopruneError: the checkpoint is corrupt, truncated or not a moprune checkpoint (the
            message says that ``evaluations.csv`` was left untouched).
    """
    file = os.path.join(os.fspath(path), CHECKPOINT)
    if not os.path.isfile(file):
        return None
    try:
        with open(file, "rb") as f:
            state = pickle.load(f)
    except Exception as exc:  # any unpickling failure means the same thing to the user
        raise MopruneError(_corrupt(file, f"{type(exc).__name__}: {exc}")) from None
    keys = {"format", "version", "generation", "algorithm", "archive", "cache", "meta", "csv_size",
            "csv_columns", "rng"}
    if not isinstance(state, dict) or state.get("format") != _FORMAT or not keys <= set(state):
        raise MopruneError(_corrupt(file, "not a moprune run checkpoint"))
    if state["version"] != _VERSION:
        raise MopruneError(_corrupt(file, f"checkpoint version {state['version']!r}, this moprune reads "
                                          f"{_VERSION}"))
    return state


def _corrupt(file, why):
    return (f"the checkpoint {file} is corrupt or truncated ({why}); {EVALUATIONS} beside it was not "
            "touched and is still readable; start the run over with --force")


# ----------------------------------------------------------------------------- results
def _meta(problem, run_problem, algorithm, seed):
    return {
        "objectives": list(run_problem.result_objectives),
        "algorithm": algorithm,
        "seed": int(seed),
        "base_accuracy": float(problem.base_accuracy),
        "base_macs": float(problem.base_macs),
        "base_params": float(problem.base_params),
        "max_accuracy_drop": problem.max_accuracy_drop,
    }


def _result(archive, meta, *, space=None, pymoo_result=None):
    meta = dict(meta)
    meta["objectives"] = tuple(meta["objectives"])
    return SearchResult(archive=list(archive), space=space, pymoo_result=pymoo_result, **meta)


def load_result(path, *, space=None, partial=False):
    """The :class:`moprune.SearchResult` of a finished run directory (``pymoo_result`` is ``None``).

    Args:
        path: The run directory.
        space: The run's space, attached to the result (to rebuild candidates); optional.
        partial: Also accept an unfinished run: its archive up to the last checkpoint.

    Raises:
        MopruneError: no finished run there (nor a checkpoint with ``partial``), or a corrupt file.
    """
    path = os.fspath(path)
    file = os.path.join(path, RESULT)
    if os.path.isfile(file):
        try:
            with open(file, "rb") as f:
                state = pickle.load(f)
            archive, meta = state["archive"], state["meta"]
        except Exception as exc:
            raise MopruneError(f"{file} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
        return _result(archive, meta, space=space)
    if read_config(path) is None:
        raise MopruneError(f"{path!r} is not a moprune run directory (no {CONFIG})")
    if partial:
        state = load_checkpoint(path)
        if state is not None:
            return _result(state["archive"], state["meta"], space=space)
    raise MopruneError(f"the run in {path!r} has not finished (no {RESULT}); continue it with "
                       f"moprune search --resume {path}")


# ----------------------------------------------------------------------------- the run
def run_search(path, problem, algorithm, *, pop_size, n_gen=None, n_evals=None, seed=0, resume=False,
               progress=False, on_generation=None, options=None):
    """Run :func:`moprune.search` with a checkpoint and CSV rows after every generation.

    The directory must have been prepared with :func:`prepare_run`. With ``resume``, the run
    continues from its last checkpoint (from scratch when it was killed before the first one;
    a finished run's stored result is returned as is).

    Args:
        path: The run directory.
        problem: The :class:`moprune.PruningProblem`, rebuilt from the run's config on resume.
        algorithm: A registry name (see ``moprune.algorithms.ALGORITHMS``).
        pop_size, n_gen, n_evals, seed: As for :func:`moprune.search`.
        resume: Continue the run stored in ``path``.
        progress: Passed to :func:`moprune.search` (its bar of candidates).
        on_generation: Optional ``callable(problem, info)`` after each checkpoint; ``info`` holds
            ``generation``, ``n_rows`` (the archive's size) and ``new`` (the frame of the
            generation's rows).
        options: Options of the algorithm's factory.

    Returns:
        The :class:`moprune.SearchResult` (with ``space``; ``pymoo_result`` only when this call
        ran the search).

    Raises:
        MopruneError: a corrupt checkpoint, or a checkpoint that does not fit ``problem``.
    """
    from moprune.algorithms import ALGORITHMS

    path = os.fspath(path)
    if read_config(path) is None:
        raise MopruneError(f"{path!r} is not a prepared run directory (no {CONFIG}); call prepare_run first")
    if not isinstance(algorithm, str):
        raise invalid_value("algorithm", f"a registered name, one of {ALGORITHMS.names()}", algorithm)
    options = dict(options or {})
    if resume and os.path.isfile(os.path.join(path, RESULT)):
        return load_result(path, space=problem.space)

    with _lock(path):
        return _run_search(path, problem, algorithm, pop_size=pop_size, n_gen=n_gen, n_evals=n_evals, seed=seed,
                           resume=resume, progress=progress, on_generation=on_generation, options=options)


@contextlib.contextmanager
def _lock(path):
    """Hold ``path/.lock`` (an advisory ``flock``, freed by the OS even on SIGKILL) while running."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no protection against two writers
        yield
        return
    with open(os.path.join(path, ".lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise MopruneError(f"another process is running the search in {path!r}") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_search(path, problem, algorithm, *, pop_size, n_gen, n_evals, seed, resume, progress, on_generation,
                options):
    from moprune.algorithms import ALGORITHMS

    csv_file = os.path.join(path, EVALUATIONS)
    ckpt_file = os.path.join(path, CHECKPOINT)
    for name in os.listdir(path):  # temporary files of atomic writes a kill interrupted
        if name.startswith(".tmp-"):
            os.remove(os.path.join(path, name))
    state = load_checkpoint(path) if resume else None
    # the factory's algorithm: a fresh start, or only the source of the problem it searches
    fresh = ALGORITHMS.get(algorithm)(problem, pop_size=pop_size, **options)
    run_problem = getattr(fresh, "moprune_problem", None) or problem
    resume_arg = None
    if state is not None:
        try:
            algo = _Unpickler(io.BytesIO(state["algorithm"]), _refs(problem, run_problem)).load()
        except Exception as exc:
            raise MopruneError(_corrupt(ckpt_file, f"{type(exc).__name__}: {exc}")) from None
        problem.evaluator.cache.load_state_dict(state["cache"])
        if state.get("counters") is not None:
            for key, value in state["counters"].items():
                setattr(problem.evaluator, key, value)
        _set_rng_states(state["rng"])
        resume_arg = {"algorithm": algo, "archive": state["archive"]}
        csv_size, columns = state["csv_size"], state["csv_columns"]
        if not os.path.isfile(csv_file) or os.path.getsize(csv_file) < csv_size:
            raise MopruneError(f"{csv_file} is shorter than the checkpoint says ({csv_size} bytes); "
                               "it was edited or lost: start the run over with --force")
        with open(csv_file, "r+b") as f:  # rows of the interrupted generation go
            f.truncate(csv_size)
            f.flush()
            os.fsync(f.fileno())
        logger.info("resuming %s after generation %d (%d candidates)", path, state["generation"],
                    len(state["archive"]))
        meta = state["meta"]
    else:
        csv_size, columns, meta = 0, None, None
        if os.path.exists(csv_file):
            os.remove(csv_file)
        if os.path.exists(ckpt_file):
            os.remove(ckpt_file)

    box = {"csv_size": csv_size, "columns": columns, "meta": meta}

    def checkpoint(algo, root):
        if box["meta"] is None:
            box["meta"] = _meta(root, run_problem, algorithm, seed)
        new = _rows(root, box["meta"], box["n_rows"], box["columns"])
        if box["columns"] is None:
            box["columns"] = list(new.columns)
        box["csv_size"] = _append(csv_file, new, header=box["csv_size"] == 0)
        box["n_rows"] = len(root.archive)
        _save_checkpoint(ckpt_file, algorithm=algo, problem=root, run_problem=run_problem, meta=box["meta"],
                         csv_size=box["csv_size"], columns=box["columns"])
        if on_generation is not None:
            on_generation(root, {"generation": int(root.generation), "n_rows": len(root.archive), "new": new})

    box["n_rows"] = len(state["archive"]) if state is not None else 0
    if resume_arg is None:
        result = search(problem, fresh, pop_size=pop_size, n_gen=n_gen, n_evals=n_evals, seed=seed,
                        progress=progress, on_generation=checkpoint)
        result.algorithm = algorithm
    else:
        result = search(problem, algorithm, pop_size=pop_size, n_gen=n_gen, n_evals=n_evals, seed=seed,
                        progress=progress, on_generation=checkpoint, resume=resume_arg)
    if box["meta"] is None:
        box["meta"] = _meta(problem, run_problem, algorithm, seed)
    with atomic_path(os.path.join(path, RESULT)) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump({"format": _FORMAT, "version": _VERSION, "archive": list(result.archive),
                         "meta": box["meta"]}, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
    return result

