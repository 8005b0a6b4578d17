"""``checkpoint.pkl``: the state a run resumes from, a pickle authenticated with an HMAC.

pymoo's algorithm state (population, operators, ``random_state``) can only be saved as a
pickle, and unpickling runs code. So a checkpoint is unpickled only by ``--resume``, and only
after its HMAC-SHA256 checks out under a secret that belongs to the user: a random key kept in
``checkpoint.key`` under :func:`moprune.data.cache_dir` (``$MOPRUNE_CACHE``), created with mode
0600. A checkpoint written elsewhere (another user, another machine, a crafted file) is refused
before a byte of it is unpickled. Reading a run (report, pick, compare, retrain, export) never
opens the checkpoint at all.

The file is ``MAGIC``, the hex HMAC of the payload and a newline, then the payload: a pickle of
a dict holding the pymoo algorithm (itself pickled with the run's live objects, problem, space,
model and evaluator, left out as references), the archive, the evaluator's state, the
generation, the size of ``evaluations.csv`` at that moment and the global random states.
"""

import hashlib
import hmac
import io
import os
import pickle
import random
import secrets
import stat
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch

from moprune.data.splits import cache_dir
from moprune.exceptions import MopruneError
from moprune.io import atomic_path
from moprune.runs.config import PathLike

__all__ = ["CHECKPOINT", "KEY_FILE", "CheckpointError", "checkpoint_key", "key_path", "live_objects",
           "load_checkpoint", "restart_hint", "rng_states", "save_checkpoint", "set_rng_states", "unpickle_algorithm"]

CHECKPOINT = "checkpoint.pkl"
KEY_FILE = "checkpoint.key"
MAGIC = b"moprune-checkpoint 2\n"
FORMAT = "moprune-run"
VERSION = 2
_KEY_BYTES = 32
_STATE_KEYS = {"format", "version", "generation", "algorithm", "archive", "evaluator", "meta", "csv_size",
               "csv_columns", "rng"}


class CheckpointError(MopruneError):
    """A checkpoint that cannot be used: corrupt, truncated, or not written by this user's moprune."""


# ----------------------------------------------------------------------------- the key
def key_path() -> str:
    """Where the checkpoint key lives: ``checkpoint.key`` in :func:`moprune.data.cache_dir`."""
    return os.path.join(cache_dir(), KEY_FILE)


def _read_key(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise MopruneError(f"cannot read the checkpoint key {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        with os.fdopen(fd, "rb", closefd=False) as f:
            text = f.read(4 * _KEY_BYTES)
    finally:
        os.close(fd)
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise MopruneError(f"the checkpoint key {path} belongs to another user (uid {info.st_uid}); "
                           "point $MOPRUNE_CACHE at a folder of your own")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise MopruneError(f"the checkpoint key {path} can be read by others (mode "
                           f"{stat.S_IMODE(info.st_mode):04o}); make it private with: chmod 600 {path}")
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise MopruneError(f"the checkpoint key {path} is damaged (not {2 * _KEY_BYTES} hex digits); delete it "
                           "and a new one is made, but checkpoints made with the old key are then refused")
    return key


def checkpoint_key(*, create: bool = True) -> Optional[bytes]:
    """The user's secret checkpoint key, made (mode 0600) on first use when ``create``.

    Two processes making it at once agree on one key: it is written to a private temporary
    file and linked into place only if no key is there yet.

    Returns:
        The key, or ``None`` when there is none and ``create`` is false.

    Raises:
        MopruneError: the key file is damaged, readable by others or owned by another user.
    """
    path = key_path()
    if os.path.lexists(path):
        return _read_key(path)
    if not create:
        return None
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-key-", dir=folder)  # mkstemp creates it with mode 0600
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_bytes(_KEY_BYTES).hex() + "\n").encode("ascii"))
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use that one
    finally:
        os.remove(tmp)
    return _read_key(path)


def _digest(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).hexdigest().encode("ascii")


# ----------------------------------------------------------------------------- live objects as references
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


def unpickle_algorithm(data: bytes, refs: Dict[str, Any]) -> Any:
    """The pymoo algorithm pickled in an (authenticated) checkpoint, bound to this run's live objects."""
    return _Unpickler(io.BytesIO(data), refs).load()


def live_objects(problem: Any, run_problem: Any) -> Dict[str, Any]:
    """The objects a checkpoint refers to instead of holding: the caller rebuilds them."""
    return {"problem": problem, "run_problem": None if run_problem is problem else run_problem,
            "space": problem.space, "model": getattr(problem.space, "model", None),
            "evaluator": problem.evaluator}


def rng_states() -> Dict[str, Any]:
    """numpy's, Python's and torch's global random states."""
    return {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}


def set_rng_states(states: Dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(file: PathLike, *, algorithm: Any, problem: Any, run_problem: Any, meta: Dict[str, Any],
                    csv_size: int, columns: list) -> None:
    """Write the checkpoint of a run after a generation, atomically, signed with the user's key."""
    buffer = io.BytesIO()
    _Pickler(buffer, live_objects(problem, run_problem)).dump(algorithm)
    evaluator = problem.evaluator
    state = {
        "format": FORMAT,
        "version": VERSION,
        "generation": int(problem.generation),
        "algorithm": buffer.getvalue(),
        "archive": list(problem.archive),
        "evaluator": evaluator.state_dict() if hasattr(evaluator, "state_dict") else None,
        "meta": dict(meta),
        "csv_size": int(csv_size),
        "csv_columns": list(columns),
        "rng": rng_states(),
    }
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    key = checkpoint_key()
    with atomic_path(file) as tmp:
        with open(tmp, "wb") as f:
            f.write(MAGIC + _digest(key, payload) + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())


def restart_hint(path: str) -> str:
    """How to start a run over from its ``evaluations.csv``, keeping the file."""
    return (f"start the run over with: moprune search --restart-from-csv {path} (it keeps evaluations.csv, "
            "as evaluations.previous.csv, and reuses its accuracies instead of evaluating those candidates again)")


def load_checkpoint(path: PathLike) -> Optional[Dict[str, Any]]:
    """The checkpoint of run directory ``path`` (the algorithm still pickled), or ``None``.

    The HMAC is checked before anything is unpickled.

    Raises:
        CheckpointError: the checkpoint is not signed with this user's key (made elsewhere, or
            crafted), corrupt or truncated; the message says how to start over from
            ``evaluations.csv``, which was left untouched.
    """
    path = os.fspath(path)
    file = os.path.join(path, CHECKPOINT)
    if not os.path.isfile(file):
        return None
    with open(file, "rb") as f:
        data = f.read()
    head = len(MAGIC) + 2 * hashlib.sha256().digest_size + 1
    if not data.startswith(MAGIC) or len(data) < head or data[head - 1:head] != b"\n":
        raise CheckpointError(_refused(path, "it is not an authenticated moprune checkpoint (it is corrupt or "
                                             "truncated, was made by an older moprune, or is no checkpoint at "
                                             "all); it was not unpickled"))
    mac, payload = data[len(MAGIC):head - 1], data[head:]
    key = checkpoint_key(create=False)
    if key is None:
        raise CheckpointError(_refused(path, f"there is no checkpoint key ({key_path()}) here, so it was "
                                             "written by another user or machine; it was not unpickled"))
    if not hmac.compare_digest(mac, _digest(key, payload)):
        raise CheckpointError(_refused(path, f"its HMAC does not match the key {key_path()}: it is corrupt or "
                                             "truncated, or was written by another user or machine (or with "
                                             "another $MOPRUNE_CACHE); it was not unpickled"))
    try:
        state = pickle.loads(payload)  # authenticated: written by this user's moprune
    except Exception as exc:  # any unpickling failure means the same thing to the user
        raise CheckpointError(_refused(path, f"it is corrupt ({type(exc).__name__}: {exc})")) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not _STATE_KEYS <= set(state):
        raise CheckpointError(_refused(path, "it is not a moprune run checkpoint"))
    if state["version"] != VERSION:
        raise CheckpointError(_refused(path, f"it has version {state['version']!r}, this moprune reads {VERSION}"))
    return state


def _refused(path: str, why: str) -> str:
    return (f"cannot resume from {os.path.join(path, CHECKPOINT)}: {why}. evaluations.csv beside it was not "
            f"touched; {restart_hint(path)}")
