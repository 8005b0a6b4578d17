"""Local worker processes that evaluate candidates for an :class:`moprune.Evaluator`.

Each worker is a fresh process (forked from a fork server that has imported torch, or spawned
where there is none; never a fork of the searching process) that receives, once at start-up, a settings-only copy of the
evaluator, its data subsets and the space (the base model and its index maps); afterwards a
task is one :class:`moprune.space.Plan` and a result one :class:`EvalRecord`. Every worker runs
one task at a time, so when a worker dies the candidate it was running is known: it goes to a
replacement worker, and a candidate that has killed :data:`MAX_RETRIES` + 1 workers is recorded
as failed. Results come back in request order whatever order they finish in.

Workers ignore Ctrl-C (the parent shuts them down), and exit by themselves when the parent's end
of their pipe closes, so a parent that dies leaves no worker behind.
"""

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import time
import weakref
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Dict, List, Optional, Sequence, Tuple

from moprune.evaluation.cache import EvalRecord
from moprune.exceptions import MopruneError
from moprune.logging import get_logger

__all__ = ["MAX_RETRIES", "WorkerPool", "default_threads", "died_record", "trim_memory"]

logger = get_logger("evaluation")

MAX_RETRIES = 2
"""Times a candidate whose worker died is given to a replacement before it is recorded as failed."""

_START_FAILURES = 3
_JOIN_SECONDS = 5.0

_libc = None


def trim_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Materializing a pruned model frees tensors of many different sizes; glibc keeps the freed
    pages in its arenas, so without trimming a long search's resident memory creeps up. The
    environment variable ``MOPRUNE_MALLOC_TRIM=0`` turns it off (to measure the difference).
    """
    global _libc
    if os.environ.get("MOPRUNE_MALLOC_TRIM", "1") == "0":
        return
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


def died_record(plan: Any, deaths: int, detail: str) -> EvalRecord:
    """The failed record of a candidate that killed its worker ``deaths`` times (``detail``: the last death)."""
    return EvalRecord(plan_key=plan.key, accuracy=float("nan"), summary=dict(plan.summary),
                      error=f"WorkerDied: the worker process died {deaths} times evaluating this candidate ({detail})")


def default_threads(n_workers: int) -> int:
    """Torch threads per worker when not given: the cores this process may use // ``n_workers`` (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // n_workers)


def _worker_main(conn, threads: int) -> None:
    """A worker's loop: set up from the first message, then answer tasks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    torch.set_num_threads(threads)
    try:
        _, evaluator, space = conn.recv()
    except (EOFError, OSError):
        return
    except Exception as exc:  # e.g. a model class that cannot be imported here
        conn.send(("init_error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "space":
            space = message[1]
            continue
        if kind == "trim":  # the population is done: hand freed memory back while the parent works
            trim_memory()
            continue
        _, index, plan, limits = message
        try:
            record = evaluator.run(space, plan, *limits)
        except Exception as exc:  # run() catches the candidate's errors; anything else fails it too
            record = EvalRecord(plan_key=plan.key, accuracy=float("nan"), error=f"{type(exc).__name__}: {exc}",
                                summary=dict(plan.summary))
        try:
            conn.send(("done", index, record))
        except (BrokenPipeError, OSError):
            return


_HINT = ("a worker is a new Python process: a script must start the search under "
         "`if __name__ == \"__main__\":`, and the classes of the model and space must be importable from a "
         "module, not only defined in an interactive session")

_PRELOAD = ["torch", "moprune.evaluation.evaluator", "moprune.evaluation.workers"]


def _context():
    """Where workers come from: a fork server that has imported torch (fast starts, no threads or CUDA
    state forked), or spawned fresh interpreters where there is no fork server (Windows)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")  # pragma: no cover - Windows


class _Worker:
    """One worker process, its pipe and the task it runs (``None`` when idle)."""

    def __init__(self, context, slot: int, threads: int, setup: tuple):
        self.slot = slot
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, threads), daemon=True,
                                       name=f"moprune-worker-{slot}")
        self.process.start()
        child.close()
        self.setup = setup
        self.task: Optional[int] = None
        self.ready = False

    def send_setup(self) -> None:
        """Send the set-up message (blocks until the worker has started reading it)."""
        setup, self.setup = self.setup, None
        try:
            self.conn.send(setup)
        except (BrokenPipeError, OSError):
            pass  # it died while starting: noticed by the pool like any other death

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid


def _stop(workers: List[_Worker]) -> None:
    """Ask every worker to stop, then terminate (and at last kill) those still running."""
    for w in workers:
        try:
            w.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
    deadline = time.monotonic() + _JOIN_SECONDS
    for w in workers:
        w.process.join(max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(1.0)
        if w.process.is_alive():  # pragma: no cover - a worker stuck in native code
            w.process.kill()
            w.process.join(1.0)
        w.conn.close()
    workers.clear()


class WorkerPool:
    """``n_workers`` spawned processes evaluating plans for one evaluator and one space.

    Args:
        evaluator: A settings-only evaluator (no pool of its own); each worker gets a copy.
        subsets: ``(val, train)`` data subsets (``train`` may be ``None``).
        space: The space the plans belong to.
        n_workers: Number of worker processes.
        threads: Torch threads in each worker.
        devices: Device of each worker slot (worker ``i`` runs on ``devices[i % len(devices)]``).

    Attributes:
        n_restarts: Workers started to replace one that died.
    """

    def __init__(self, evaluator: Any, subsets: tuple, space: Any, *, n_workers: int, threads: int,
                 devices: Sequence[Any]):
        self._context = _context()
        self._evaluator = evaluator
        self._subsets = subsets
        self._space = space
        self._threads = threads
        self._devices = list(devices)
        self._workers: List[_Worker] = []
        self.n_restarts = 0
        try:
            for slot in range(n_workers):  # start them all, then send the set-ups: they import in parallel
                self._workers.append(self._start(slot, send=False))
            for w in self._workers:
                w.send_setup()
        except BaseException:
            _stop(self._workers)
            raise
        self._finalizer = weakref.finalize(self, _stop, self._workers)

    def _start(self, slot: int, *, send: bool = True) -> _Worker:
        evaluator = self._evaluator.for_worker(self._devices[slot % len(self._devices)], self._subsets)
        worker = _Worker(self._context, slot, self._threads, ("setup", evaluator, self._space))
        if send:
            worker.send_setup()
        return worker

    @property
    def pids(self) -> List[int]:
        """Process ids of the running workers."""
        return [w.pid for w in self._workers]

    @property
    def alive(self) -> bool:
        """Whether the pool has not been closed."""
        return self._finalizer.alive

    def set_space(self, space: Any) -> None:
        """Send a new space (e.g. after :meth:`moprune.PruningProblem.rebase`) to every worker."""
        if space is self._space:
            return
        self._space = space
        for w in self._workers:
            try:
                w.conn.send(("space", space))
            except (BrokenPipeError, OSError):
                pass  # a dead worker is replaced (with the new space) when its death is noticed

    def run(self, plans: Sequence[Any], bounds: Optional[Sequence[Tuple[Optional[int], ...]]] = None
            ) -> List[EvalRecord]:
        """Evaluate ``plans`` on the workers; the records come back in the order of ``plans``.

        ``bounds``: each plan's ``(max_errors, confirm_limit, max_pooled_errors)`` (:meth:`moprune.Evaluator.run`),
        or ``None``.
        """
        if not self.alive:
            raise MopruneError("this worker pool has been closed")
        try:
            results = self._run(plans, [(None, None, None)] * len(plans) if bounds is None else list(bounds))
        except BaseException:  # Ctrl-C or an error: tasks may be in flight, so the pool cannot be reused
            self.close()
            raise
        for w in self._workers:  # once per population: trimming after every candidate cost 14% CPU
            try:
                w.conn.send(("trim",))
            except (BrokenPipeError, OSError):
                pass
        return results

    def _run(self, plans, bounds):
        results: List[Optional[EvalRecord]] = [None] * len(plans)
        pending = deque(range(len(plans)))
        deaths: Dict[int, int] = {}
        left = len(plans)
        start_failures = 0
        for w in self._workers:
            w.task = None
        while left:
            for w in self._workers:
                if w.task is None and pending and w.process.is_alive():
                    index = pending.popleft()
                    try:
                        w.conn.send(("task", index, plans[index], bounds[index]))
                        w.task = index
                    except (BrokenPipeError, OSError):
                        pending.appendleft(index)  # its death is handled below
            by_conn = {w.conn: w for w in self._workers}
            by_sentinel = {w.process.sentinel: w for w in self._workers}
            for ready in wait(list(by_conn) + list(by_sentinel)):
                w = by_conn.get(ready) or by_sentinel.get(ready)
                if w not in self._workers:
                    continue  # replaced already in this round
                message = None
                if ready in by_conn:
                    try:
                        message = w.conn.recv()
                    except (EOFError, OSError):
                        message = None
                if message is not None and message[0] == "ready":
                    w.ready = True
                    start_failures = 0
                    continue
                if message is not None and message[0] == "done":
                    _, index, record = message
                    results[index] = record
                    w.task = None
                    left -= 1
                    continue
                if message is not None and message[0] == "init_error":
                    self.close()
                    raise MopruneError(f"a worker process could not set up: {message[1]} ({_HINT})")
                # the worker died (killed, out of memory, crashed)
                w.process.join(1.0)
                code = w.process.exitcode
                if not w.ready:
                    start_failures += 1
                    if start_failures >= _START_FAILURES:
                        self.close()
                        raise MopruneError(f"worker processes keep dying at start-up (exit code {code}); {_HINT}")
                if w.task is not None and not w.ready:  # it died setting up: not the candidate's doing
                    pending.appendleft(w.task)
                    w.task = None
                if w.task is not None:
                    index, w.task = w.task, None
                    deaths[index] = deaths.get(index, 0) + 1
                    if deaths[index] > MAX_RETRIES:
                        plan = plans[index]
                        logger.warning("candidate %s killed its worker %d times; recorded as failed",
                                       plan.key, deaths[index])
                        results[index] = died_record(plan, deaths[index], f"last exit code {code}")
                        left -= 1
                    else:
                        logger.warning("worker %d died (exit code %s) evaluating %s; retrying on a new worker",
                                       w.pid, code, plans[index].key)
                        pending.appendleft(index)
                else:
                    logger.warning("worker %d died (exit code %s); starting a new one", w.pid, code)
                w.conn.close()
                position = self._workers.index(w)
                self._workers[position] = self._start(w.slot)
                self.n_restarts += 1
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        self._finalizer()
