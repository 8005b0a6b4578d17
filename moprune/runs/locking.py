"""One writer per run directory: an advisory ``flock`` on ``DIR/.lock``, with the holder's PID inside.

The lock is taken before anything is written (create the folder, lock, then write the config)
and held until the search ends; the operating system frees it when the process dies, SIGKILL
included, so a stale ``.lock`` file never blocks anyone. A process holds at most one lock per
directory (:func:`acquire` again returns the same one). Readers ask :func:`lock_holder` whether
a run is still going and which process runs it.
"""

import errno
import os
import time
from dataclasses import dataclass
from typing import Dict, Optional

from moprune.exceptions import MopruneError, invalid_value
from moprune.runs.config import PathLike

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no protection against two writers
    fcntl = None

__all__ = ["LOCK", "RunLock", "RunLockedError", "acquire", "held_here", "lock_holder", "release"]

LOCK = ".lock"
_RETRIES = 10  # a reader's brief shared lock, or a holder about to write its PID, is waited for
_PID_WIDTH = 20


class RunLockedError(MopruneError):
    """Another process holds the run directory's lock.

    Attributes:
        path: The run directory.
        pid: The holder's process id (``None`` when it could not be read).
    """

    def __init__(self, message: str, *, path: str, pid: Optional[int]):
        super().__init__(message)
        self.path = path
        self.pid = pid


@dataclass
class RunLock:
    """The lock this process holds on a run directory.

    Attributes:
        path: The run directory as given.
        fd: The open ``.lock`` file (closing it frees the lock).
        created_dir: This process created the directory when it took the lock.
        fresh: :func:`moprune.runs.prepare_run` wrote a new run's config under this lock (what
            :func:`moprune.runs.abandon_run` may remove if the run fails before its first checkpoint).
    """

    path: str
    fd: int
    created_dir: bool = False
    fresh: bool = False


_HELD: Dict[str, RunLock] = {}


def _key(path: str) -> str:
    return os.path.realpath(path)


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _describe(pid: Optional[int]) -> str:
    return f"PID {pid}" if pid is not None else "PID unknown"


def held_here(path: PathLike) -> Optional[RunLock]:
    """The lock this process holds on run directory ``path``, or ``None``."""
    return _HELD.get(_key(os.fspath(path)))


def acquire(path: PathLike) -> RunLock:
    """Create the folder ``path`` if needed and lock it for this process (non-blocking).

    Raises:
        MopruneValueError: ``path`` exists and is not a folder.
        RunLockedError: another process holds the lock (the message names its PID).
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise invalid_value("the run directory", "a folder (new, empty or holding a run)",
                            f"{path} (an existing file)")
    held = held_here(path)
    if held is not None:
        return held
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(path)
        created = True
    except FileExistsError:
        created = False
    lock = RunLock(path=path, fd=-1, created_dir=created)
    if fcntl is None:  # pragma: no cover
        _HELD[_key(path)] = lock
        return lock
    file = os.path.join(path, LOCK)
    attempt = 0
    while True:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            attempt += 1
            if attempt < _RETRIES and (pid is None or attempt < 3):
                time.sleep(0.02)
                continue
            raise RunLockedError(f"another process ({_describe(pid)}) is running a search in {path!r}",
                                 path=path, pid=pid) from None
        # the file may have been removed and made anew since we opened it: lock the one in place
        try:
            same = os.stat(file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    # one fixed-width write, no truncation first: a reader never sees an empty or partial PID
    os.pwrite(fd, f"{os.getpid():<{_PID_WIDTH}}\n".encode("ascii"), 0)
    os.fsync(fd)
    lock.fd = fd
    _HELD[_key(path)] = lock
    return lock


def release(path: PathLike, *, remove_file: bool = False) -> bool:
    """Free this process's lock on ``path`` (``remove_file``: delete ``.lock`` first).

    Returns:
        Whether this process held it.
    """
    lock = _HELD.pop(_key(os.fspath(path)), None)
    if lock is None:
        return False
    if remove_file:
        try:
            os.remove(os.path.join(lock.path, LOCK))
        except FileNotFoundError:
            pass
    if lock.fd >= 0:
        os.close(lock.fd)
    return True


def lock_holder(path: PathLike) -> Optional[int]:
    """The PID of *another* process holding the lock of run directory ``path``, else ``None``.

    Returns ``-1`` when another process holds it but its PID cannot be read.
    """
    path = os.fspath(path)
    if fcntl is None or held_here(path) is not None:
        return None
    try:
        fd = os.open(os.path.join(path, LOCK), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pid = _read_pid(fd)
            return -1 if pid is None else pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
