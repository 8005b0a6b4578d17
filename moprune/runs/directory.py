"""Making a folder a run directory: lock first, check what is there, then write the config."""

import os
from typing import Any, Dict

from moprune.exceptions import MopruneError, invalid_value
from moprune.runs.checkpoint import CHECKPOINT
from moprune.runs.config import CONFIG, PathLike, config_differences, read_config, write_config
from moprune.runs.evaluations import EVALUATIONS
from moprune.runs.locking import LOCK, RunLockedError, acquire, held_here, release
from moprune.runs.stored import GENOMES, LEGACY_RESULT, PROGRESS, RESULT
from moprune.validation import conflict

__all__ = ["PREVIOUS_EVALUATIONS", "REPORT_FILES", "RUN_FILES", "abandon_run", "prepare_run", "remove_temporary"]

PREVIOUS_EVALUATIONS = "evaluations.previous.csv"
RUN_FILES = (CONFIG, EVALUATIONS, CHECKPOINT, PROGRESS, GENOMES, RESULT, LEGACY_RESULT, PREVIOUS_EVALUATIONS)
"""Files a run owns (``--force`` removes these and the report outputs, nothing else; ``.lock`` stays)."""

REPORT_FILES = ("pareto.csv", "pareto.png", "convergence.png", "retrained.pt", "pruned.pt", "pruned.onnx")
"""What ``report``, ``retrain`` and ``export`` write into a run directory by default."""


def remove_temporary(path: str) -> None:
    """Remove the temporary files of atomic writes that a kill interrupted."""
    for name in os.listdir(path):
        if name.startswith(".tmp-"):
            try:
                os.remove(os.path.join(path, name))
            except FileNotFoundError:
                pass


def _busy(exc: RunLockedError, action: str) -> MopruneError:
    who = f"PID {exc.pid}" if exc.pid is not None else "PID unknown"
    return RunLockedError(f"{action}: another process ({who}) is running the search in {exc.path!r}; wait for it "
                          f"to end or stop it (kill {exc.pid if exc.pid is not None else 'PID'}) first",
                          path=exc.path, pid=exc.pid)


def prepare_run(path: PathLike, config: Dict[str, Any], *, resume: bool = False, force: bool = False) -> str:
    """Make ``path`` the run directory of ``config``, holding its lock.

    In this order: create the folder, take its lock (another process holding it is an error
    naming its PID: nothing is written or removed then, ``force`` included), check what the
    folder holds, write ``config.json`` atomically. The lock stays held by this process until
    :func:`moprune.runs.run_search` ends (or :func:`abandon_run`).

    - A new or empty folder: ``config.json`` is written; returns ``"new"``.
    - ``force``: the run files (and report outputs) of a previous run are removed first.
    - ``resume``: the folder must hold a run whose config equals ``config``; returns ``"resume"``.
    - Otherwise a folder that already holds a run (the same or a different one) is refused.

    Args:
        path: The run directory.
        config: A JSON-serialisable dict of the resolved settings.
        resume: Continue the run stored there.
        force: Start over, discarding what is there (refused while another process runs it).

    Returns:
        ``"new"`` or ``"resume"``.

    Raises:
        MopruneValueError: ``path`` is an existing file, or bad arguments.
        RunLockedError: another process is running a search there.
        MopruneError: the folder holds another run (the message names the differing keys), no
            run to resume, or files that are not a run's.
    """
    path = os.fspath(path)
    if not isinstance(config, dict):
        raise invalid_value("config", "a dict of settings", type(config).__name__)
    if resume and force:
        raise conflict(("resume", "force"), "at most one of them set", (resume, force))
    if resume and read_config(path) is None:
        raise MopruneError(f"there is no run to resume in {path!r} (no {CONFIG})")
    held_before = held_here(path) is not None
    try:
        lock = acquire(path)
    except RunLockedError as exc:
        raise _busy(exc, "refusing --force" if force else "cannot resume" if resume else "cannot start") from None
    try:
        return _prepare_locked(path, config, lock, resume=resume, force=force)
    except BaseException:
        if not held_before:
            release(path)
        raise


def _prepare_locked(path, config, lock, *, resume, force):
    remove_temporary(path)
    stored = read_config(path)
    if resume:
        if stored is None:
            raise MopruneError(f"there is no run to resume in {path!r} (no {CONFIG})")
        diff = config_differences(stored, config)
        if diff:
            raise MopruneError(f"{path!r} holds a different run: its settings differ in {diff}")
        return "resume"
    if [name for name in os.listdir(path) if name != LOCK]:
        if force:
            for name in RUN_FILES + REPORT_FILES:
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
    write_config(path, config)
    lock.fresh = True
    return "new"


def abandon_run(path: PathLike) -> bool:
    """Give up this process's run in ``path`` after a failure; release its lock.

    A run that :func:`prepare_run` made new here and that never reached its first checkpoint
    leaves nothing behind: its config, rows, temporary files and lock file go, and so does the
    folder when this process created it and it is empty, so the same command can simply be run
    again. A run with a checkpoint (or one being resumed) is left as it is, to be resumed.

    Returns:
        Whether the run's files were removed.
    """
    path = os.fspath(path)
    lock = held_here(path)
    if lock is None:
        return False
    unstarted = lock.fresh and not any(os.path.exists(os.path.join(path, name)) for name in (CHECKPOINT, RESULT))
    if not unstarted:
        release(path)
        return False
    for name in (CONFIG, EVALUATIONS, PROGRESS, GENOMES):
        try:
            os.remove(os.path.join(path, name))
        except FileNotFoundError:
            pass
    remove_temporary(path)
    release(path, remove_file=True)
    if lock.created_dir:
        try:
            os.rmdir(path)
        except OSError:  # not empty: something else is in it
            pass
    return True
