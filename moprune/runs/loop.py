"""The run loop: :func:`moprune.search` with CSV rows, a checkpoint and ``progress.json`` after every generation."""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import pandas as pd

from moprune.archive import SearchResult
from moprune.exceptions import MopruneError, invalid_value
from moprune.io import atomic_path
from moprune.logging import get_logger
from moprune.runs.checkpoint import (
    CHECKPOINT,
    CheckpointError,
    live_objects,
    load_checkpoint,
    restart_hint,
    save_checkpoint,
    set_rng_states,
    unpickle_algorithm,
)
from moprune.runs.config import CONFIG, PathLike, read_config
from moprune.runs.directory import PREVIOUS_EVALUATIONS, abandon_run, remove_temporary
from moprune.runs.evaluations import EVALUATIONS, append_rows, frame_rows, read_evaluations, records_from_frame
from moprune.runs.locking import RunLockedError, acquire, release
from moprune.runs.stored import GENOMES, PROGRESS, is_finished, load_result, write_progress, write_result
from moprune.searching import algorithm_options, search
from moprune.validation import conflict

__all__ = ["run_search"]

logger = get_logger("runs")


class _RunWriter:
    """Called after every generation: appends the new rows, then writes the checkpoint and progress.

    Attributes:
        csv_size: Size of ``evaluations.csv`` after the rows written so far.
        columns: The file's columns (``None`` before its header is written).
        meta: The result's metadata (taken from the problem at the first generation).
        n_rows: Evaluations written so far.
    """

    def __init__(self, path: str, run_problem: Any, algorithm: str, seed: int, *, csv_size: int = 0,
                 columns: Optional[List[str]] = None, meta: Optional[Dict[str, Any]] = None, n_rows: int = 0,
                 callbacks: Sequence[Callable] = ()):
        self.path = path
        self.run_problem = run_problem
        self.algorithm = algorithm
        self.seed = seed
        self.csv_size = csv_size
        self.columns = columns
        self.meta = meta
        self.n_rows = n_rows
        self.callbacks = list(callbacks)

    def result_meta(self, root: Any) -> Dict[str, Any]:
        """The run's metadata, fixed at its first generation."""
        if self.meta is None:
            self.meta = SearchResult.from_problem(self.run_problem, algorithm=self.algorithm, seed=self.seed,
                                                  archive=[], base_accuracy=root.base_accuracy).meta()
        return self.meta

    def __call__(self, algo: Any, root: Any) -> None:
        meta = self.result_meta(root)
        new = frame_rows(meta, root.archive, self.n_rows, self.columns)
        if self.columns is None:
            self.columns = list(new.columns)
        self.csv_size = append_rows(os.path.join(self.path, EVALUATIONS), new, header=self.csv_size == 0)
        self.n_rows = len(root.archive)
        save_checkpoint(os.path.join(self.path, CHECKPOINT), algorithm=algo, problem=root,
                        run_problem=self.run_problem, meta=meta, csv_size=self.csv_size, columns=self.columns)
        write_progress(self.path, generation=int(root.generation), n_evals=self.n_rows, csv_size=self.csv_size,
                       meta=meta)
        for callback in self.callbacks:
            callback(algo, root)


def run_search(path: PathLike, problem: Any, algorithm: str, *, pop_size: int, n_gen: Optional[int] = None,
               n_evals: Optional[int] = None, seed: int = 0, resume: bool = False, restart: bool = False,
               progress: bool = False, callbacks: Sequence[Callable] = (),
               options: Optional[Dict[str, Any]] = None) -> SearchResult:
    """Run :func:`moprune.search` with CSV rows, a checkpoint and ``progress.json`` after every generation.

    The directory must have been prepared with :func:`moprune.runs.prepare_run`. The run holds
    the directory's lock while it runs (the one ``prepare_run`` took, or its own) and frees it
    when it ends; if it fails before its first checkpoint, a run ``prepare_run`` made new
    leaves nothing behind (:func:`moprune.runs.abandon_run`). With ``resume``, the run
    continues from its last checkpoint (from scratch when it was killed before the first one;
    a finished run's stored result is returned as is).

    Args:
        path: The run directory.
        problem: The :class:`moprune.PruningProblem`, rebuilt from the run's config on resume.
        algorithm: A registry name (see ``moprune.algorithms.ALGORITHMS``).
        pop_size, n_gen, n_evals, seed: As for :func:`moprune.search`.
        resume: Continue the run stored in ``path``.
        restart: Start the run stored in ``path`` over, without its checkpoint (e.g. one that is
            corrupt or was made elsewhere): the accuracies in its ``evaluations.csv`` fill the
            evaluator's cache first, so those candidates are not run again (their rows say
            ``cached``); the old rows are kept in ``evaluations.previous.csv``.
        progress: Passed to :func:`moprune.search` (its bar of candidates).
        callbacks: Callables ``callback(algorithm, problem)`` called after each generation's
            checkpoint, as :func:`moprune.search` calls them (:data:`moprune.searching.SearchCallback`).
        options: Options of the algorithm's factory.

    Returns:
        The :class:`moprune.SearchResult` (with ``space``; ``pymoo_result`` only when this call
        ran the search).

    Raises:
        RunLockedError: another process is running a search in ``path``.
        CheckpointError: a checkpoint that is corrupt or not this user's (nothing unpickled).
        MopruneError: a checkpoint that does not fit ``problem``, or nothing to restart from.
    """
    from moprune.algorithms import ALGORITHMS

    path = os.fspath(path)
    if read_config(path) is None:
        raise MopruneError(f"{path!r} is not a prepared run directory (no {CONFIG}); call prepare_run first")
    if not isinstance(algorithm, str):
        raise invalid_value("algorithm", f"a registered name, one of {ALGORITHMS.names()}", algorithm)
    if resume and restart:
        raise conflict(("resume", "restart"), "at most one of them set", (resume, restart))
    try:
        acquire(path)
    except RunLockedError as exc:
        raise RunLockedError(f"{exc}; wait for it to end", path=exc.path, pid=exc.pid) from None
    finished = False
    try:
        if resume and is_finished(path):
            result = load_result(path, space=problem.space)
        else:
            result = _run(path, problem, algorithm, pop_size=pop_size, n_gen=n_gen, n_evals=n_evals, seed=seed,
                          resume=resume, restart=restart, progress=progress, callbacks=callbacks,
                          options=dict(options or {}))
        finished = True
        return result
    finally:
        if finished:
            release(path)
        else:
            abandon_run(path)


def _restart_records(path: str) -> list:
    """Read the rows of the run in ``path`` (and of an earlier restart) into cache records, and
    keep them all in ``evaluations.previous.csv``; the checkpoint and progress go."""
    frames = []
    for name in (PREVIOUS_EVALUATIONS, EVALUATIONS):
        file = os.path.join(path, name)
        if os.path.isfile(file) and os.path.getsize(file) > 0:
            frames.append(_read_complete_rows(file))
    if not frames:
        raise MopruneError(f"there is nothing to restart from in {path!r}: no {EVALUATIONS}; start the run over "
                           "with --force")
    rows = pd.concat(frames) if len(frames) > 1 else frames[0]
    if len(frames) > 1:  # an earlier restart: keep every row measured so far in one file
        with atomic_path(os.path.join(path, PREVIOUS_EVALUATIONS)) as tmp:
            rows.to_csv(tmp)
        os.remove(os.path.join(path, EVALUATIONS))
    elif os.path.isfile(os.path.join(path, EVALUATIONS)):
        os.replace(os.path.join(path, EVALUATIONS), os.path.join(path, PREVIOUS_EVALUATIONS))
    for name in (CHECKPOINT, PROGRESS, GENOMES):
        if os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))
    return records_from_frame(rows)


def _read_complete_rows(file: str) -> pd.DataFrame:
    """The rows of an evaluations file up to its last complete line (a kill may have torn the last)."""
    with open(file, "rb") as f:
        raw = f.read()
    size = raw.rfind(b"\n") + 1
    return read_evaluations(os.path.dirname(file), file=os.path.basename(file), size=size, decode=False)


def _run(path, problem, algorithm, *, pop_size, n_gen, n_evals, seed, resume, restart, progress, callbacks,
         options):
    from moprune.algorithms import ALGORITHMS

    csv_file = os.path.join(path, EVALUATIONS)
    remove_temporary(path)
    if restart:
        if is_finished(path):
            raise MopruneError(f"the run in {path!r} has finished; there is nothing to restart")
        records = _restart_records(path)
        evaluator = problem.evaluator
        if not getattr(evaluator, "use_cache", True):
            raise MopruneError("--restart-from-csv reuses accuracies through the evaluator's cache, which this "
                               "run's evaluator has turned off")
        for record in records:
            evaluator.cache.put(record)
        logger.info("restarting %s with %d accuracies from its previous rows", path, len(records))
    state = load_checkpoint(path) if resume else None
    unknown = sorted(set(options) - set(algorithm_options(algorithm)))
    if unknown:
        raise TypeError(f"algorithm {algorithm!r} has no option(s) {unknown}; its options are: "
                        f"{', '.join(algorithm_options(algorithm))}")
    # the factory's algorithm: a fresh start, or only the source of the problem it searches
    fresh = ALGORITHMS.get(algorithm)(problem, pop_size=pop_size, **options)
    run_problem = getattr(fresh, "moprune_problem", None) or problem
    if state is None:
        for name in (EVALUATIONS, CHECKPOINT, PROGRESS):
            if os.path.exists(os.path.join(path, name)):
                os.remove(os.path.join(path, name))
        writer = _RunWriter(path, run_problem, algorithm, seed, callbacks=callbacks)
        result = search(problem, fresh, pop_size=pop_size, n_gen=n_gen, n_evals=n_evals, seed=seed,
                        progress=progress, callbacks=[writer])
        result.algorithm = algorithm
    else:
        algo = _restore(path, state, problem, run_problem)
        csv_size = state["csv_size"]
        if not os.path.isfile(csv_file) or os.path.getsize(csv_file) < csv_size:
            raise MopruneError(f"{csv_file} is shorter than the checkpoint says ({csv_size} bytes); it was edited "
                               f"or lost, so the run cannot be resumed: {restart_hint(path)}")
        with open(csv_file, "r+b") as f:  # rows of the interrupted generation go
            f.truncate(csv_size)
            f.flush()
            os.fsync(f.fileno())
        logger.info("resuming %s after generation %d (%d candidates)", path, state["generation"],
                    len(state["archive"]))
        writer = _RunWriter(path, run_problem, algorithm, seed, csv_size=csv_size, columns=state["csv_columns"],
                            meta=state["meta"], n_rows=len(state["archive"]), callbacks=callbacks)
        result = search(problem, algorithm, pop_size=pop_size, n_gen=n_gen, n_evals=n_evals, seed=seed,
                        progress=progress, callbacks=[writer],
                        resume={"algorithm": algo, "archive": state["archive"]})
    writer.result_meta(problem)
    stored = SearchResult.from_meta(writer.meta, result.archive, space=result.space,
                                    pymoo_result=result.pymoo_result)
    write_result(path, stored, csv_size=writer.csv_size)
    return stored


def _restore(path, state, problem, run_problem):
    """Unpickle the checkpoint's algorithm onto ``problem`` and restore the evaluator and random states."""
    try:
        algo = unpickle_algorithm(state["algorithm"], live_objects(problem, run_problem))
    except Exception as exc:
        raise CheckpointError(f"cannot resume from {os.path.join(path, CHECKPOINT)}: it does not fit this run "
                              f"({type(exc).__name__}: {exc}); {restart_hint(path)}") from None
    evaluator = problem.evaluator
    if state["evaluator"] is not None:
        if hasattr(evaluator, "load_state_dict"):
            evaluator.load_state_dict(state["evaluator"])
        else:
            evaluator.cache.load_state_dict(state["evaluator"]["cache"])
    set_rng_states(state["rng"])
    return algo

