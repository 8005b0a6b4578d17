"""Ray actors that evaluate candidates for an :class:`moprune.Evaluator` (``backend="ray"``).

The Ray counterpart of :class:`moprune.evaluation.workers.WorkerPool`, with the same interface
(``run``, ``set_space``, ``pids``, ``alive``, ``close``, ``n_restarts``) and the same semantics:
the settings-only evaluator with its data subsets, and the space (the base model and its index
maps), are put in Ray's object store once; every actor holds them, and a task is one
:class:`moprune.space.Plan`, a result one :class:`~moprune.evaluation.cache.EvalRecord`. Every
actor runs one task at a time, so when an actor dies (killed, out of memory, its node lost) the
candidate it was running is known: it goes to a replacement actor, and a candidate that has
killed :data:`~moprune.evaluation.workers.MAX_RETRIES` + 1 actors is recorded as failed. Results
come back in request order whatever order they finish in.

Each actor asks Ray for one GPU when the cluster has GPUs (and the evaluator's device is not
``"cpu"``), otherwise for ``threads`` CPUs, and sets torch's thread count to ``threads``.

Ray is imported only here, and only when a pool starts: importing moprune never imports it.
"""

import logging
import os
import weakref
from collections import deque
from typing import Any, Dict, List, Optional, Sequence, Tuple

from moprune.evaluation.cache import EvalRecord
from moprune.evaluation.workers import MAX_RETRIES, default_threads, died_record, trim_memory
from moprune.exceptions import MopruneError
from moprune.logging import get_logger

__all__ = ["INSTALL", "OBJECT_STORE_BYTES", "RayPool", "import_ray", "ray_installed", "start_local"]

logger = get_logger("evaluation")

INSTALL = 'pip install "moprune[ray]"'
"""The command that installs Ray for moprune."""

OBJECT_STORE_BYTES = 200 * 1024 ** 2
"""Object store of a local instance: it holds one evaluator (with its data subsets) and a space."""

START_SECONDS = 300.0
"""How long actors may take to start (import torch, unpickle model and data) before it is an error."""

_START_FAILURES = 3

_HINT = ("a Ray actor is a new Python process: the classes of the model and space must be importable from a "
         "module there (a local instance gets this process's sys.path; on a cluster, use a runtime_env)")


def ray_installed() -> bool:
    """Whether Ray can be imported here (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a module that is None in sys.modules, or a broken spec
        return False


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        MopruneError: Ray is not installed (the message gives the install command).
    """
    try:
        import ray
    except ImportError:
        raise MopruneError(f"backend='ray' needs Ray, which is not installed here; install it with: {INSTALL}") \
            from None
    return ray


def start_local(*, num_cpus: Optional[int] = None, code_search_path: Optional[Sequence[str]] = None) -> bool:
    """Start a Ray instance on this machine for this process, unless one is connected already.

    The instance has no dashboard, a small object store (:data:`OBJECT_STORE_BYTES`), its
    workers' output kept out of this process's terminal, and workers that see the directories of
    this process's ``sys.path`` (as local worker processes do).

    Args:
        num_cpus: CPUs the instance offers (default: the cores this process may use).
        code_search_path: Directories added to the workers' ``sys.path`` (default: this process's).

    Returns:
        Whether an instance was started (``False``: this process was connected to one already).

    Raises:
        MopruneError: Ray is not installed.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from an offline machine
    import sys

    paths = [p for p in (code_search_path if code_search_path is not None else sys.path) if p and os.path.isdir(p)]
    ray.init(address="local", num_cpus=num_cpus or default_threads(1), include_dashboard=False,
             object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, logging_level=logging.WARNING,
             job_config=ray.job_config.JobConfig(code_search_path=paths))
    return True


class _Actor:
    """What a Ray actor runs: a worker evaluator and a space, evaluating one plan per call."""

    def __init__(self, evaluator: Any, space: Any, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._evaluator = evaluator
        self._space = space

    def pid(self) -> int:
        return os.getpid()

    def set_space(self, space: Any) -> None:
        self._space = space

    def trim(self) -> None:
        trim_memory()

    def run(self, plan: Any, max_errors: Optional[int] = None, confirm_limit: Optional[int] = None,
            max_pooled_errors: Optional[int] = None) -> EvalRecord:
        try:
            return self._evaluator.run(self._space, plan, max_errors, confirm_limit, max_pooled_errors)
        except Exception as exc:  # run() catches the candidate's errors; anything else fails it too
            return EvalRecord(plan_key=plan.key, accuracy=float("nan"), error=f"{type(exc).__name__}: {exc}",
                              summary=dict(plan.summary))


def _deaths(ray) -> tuple:
    """The Ray exceptions that mean an actor (and so its candidate's evaluation) died."""
    e = ray.exceptions
    return tuple(getattr(e, name) for name in ("RayActorError", "WorkerCrashedError", "OutOfMemoryError",
                                                "NodeDiedError") if hasattr(e, name))


def _stop(ray, actors: List[Any], disconnect: bool) -> None:
    """Kill the actors; disconnect from Ray (shutting a local instance down) when this pool connected."""
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:  # already dead, or Ray already shut down
            pass
    actors.clear()
    if disconnect and ray.is_initialized():
        ray.shutdown()


class RayPool:
    """``n_workers`` Ray actors evaluating plans for one evaluator and one space.

    Args:
        evaluator: A settings-only evaluator (no pool of its own); the actors share one copy.
        subsets: ``(val, train)`` data subsets (``train`` may be ``None``).
        space: The space the plans belong to.
        n_workers: Number of actors.
        threads: Torch threads in each actor (and CPUs asked of Ray for a CPU actor).
        address: ``None`` (the Ray instance this process is connected to, else a new local one,
            shut down by :meth:`close`), ``"auto"`` or ``"ray://host:port"`` (join that cluster).
        cpu_only: Never ask for GPUs, even when the cluster has some.

    Attributes:
        n_restarts: Actors started to replace one that died.
        use_gpu: Whether each actor holds a GPU.
    """

    def __init__(self, evaluator: Any, subsets: tuple, space: Any, *, n_workers: int, threads: int,
                 address: Optional[str] = None, cpu_only: bool = False) -> None:
        import torch

        ray = self._ray = import_ray()
        self._actors: List[Any] = []
        self._pids: List[Optional[int]] = []
        self._side: List[tuple] = []  # (actor, ref) of set_space/trim calls, waited for before the next run
        self.n_restarts = 0
        connected = False
        if not ray.is_initialized():
            if address is None:
                start_local(num_cpus=max(default_threads(1), n_workers * threads))
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            connected = True
        self._finalizer = weakref.finalize(self, _stop, ray, self._actors, connected)
        try:
            self.use_gpu = not cpu_only and ray.cluster_resources().get("GPU", 0) >= 1
            if not self.use_gpu:
                have = ray.cluster_resources().get("CPU", 0)
                if have < n_workers * threads:
                    logger.warning("the Ray cluster has %g CPUs; %d actors x %d threads need %d: some actors "
                                   "will wait for CPUs", have, n_workers, threads, n_workers * threads)
            device = torch.device("cuda") if self.use_gpu else torch.device("cpu")
            self._evaluator_ref = ray.put(evaluator.for_worker(device, subsets))
            self._space, self._space_ref = space, ray.put(space)
            resources = {"num_gpus": 1, "num_cpus": 1} if self.use_gpu else {"num_cpus": threads}
            self._actor_class = ray.remote(max_restarts=0, max_task_retries=0, **resources)(_Actor)
            self._threads = threads
            for _ in range(n_workers):  # start them all, then wait: they import torch in parallel
                self._actors.append(self._new_actor())
            self._pids = self._wait_started(self._actors)
        except BaseException:
            self.close()
            raise
        logger.info("started %d Ray actors (%s each)", n_workers,
                    "one GPU" if self.use_gpu else f"{threads} CPU thread{'s' if threads > 1 else ''}")

    def _new_actor(self):
        return self._actor_class.remote(self._evaluator_ref, self._space_ref, self._threads)

    def _wait_started(self, actors: List[Any]) -> List[int]:
        """Process ids of ``actors`` once they have set up (raises when one could not)."""
        ray = self._ray
        refs = [a.pid.remote() for a in actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=START_SECONDS)
        if len(ready) < len(refs):
            raise MopruneError(f"{len(refs) - len(ready)} Ray actor(s) did not start within {START_SECONDS:.0f} s "
                               f"(the cluster has {ray.cluster_resources()}); are there enough free CPUs/GPUs?")
        try:
            return ray.get(refs)
        except _deaths(ray) as exc:
            raise MopruneError(f"a Ray actor could not set up: {exc} ({_HINT})") from None

    @property
    def pids(self) -> List[int]:
        """Process ids of the running actors (on their nodes)."""
        return list(self._pids)

    @property
    def alive(self) -> bool:
        """Whether the pool has not been closed."""
        return self._finalizer.alive

    def set_space(self, space: Any) -> None:
        """Send a new space (e.g. after :meth:`moprune.PruningProblem.rebase`) to every actor, via the object store once."""
        if space is self._space:
            return
        self._space, self._space_ref = space, self._ray.put(space)
        self._side += [(a, a.set_space.remote(self._space_ref)) for a in self._actors]

    def run(self, plans: Sequence[Any], bounds: Optional[Sequence[Tuple[Optional[int], ...]]] = None
            ) -> List[EvalRecord]:
        """Evaluate ``plans`` on the actors; the records come back in the order of ``plans``.

        ``bounds``: each plan's ``(max_errors, confirm_limit, max_pooled_errors)`` (:meth:`moprune.Evaluator.run`),
        or ``None``.
        """
        if not self.alive:
            raise MopruneError("this Ray actor pool has been closed")
        try:
            results = self._run(plans, [(None, None, None)] * len(plans) if bounds is None else list(bounds))
        except BaseException:  # Ctrl-C or an error: tasks may be in flight, so the pool cannot be reused
            self.close()
            raise
        self._side += [(a, a.trim.remote()) for a in self._actors]  # once per population, as local workers do
        return results

    def _drain_side_calls(self) -> None:
        """Wait for the earlier ``set_space``/``trim`` calls; an actor that died since is replaced."""
        side, self._side = self._side, []
        for actor, ref in side:
            try:
                self._ray.get(ref)
            except _deaths(self._ray) as exc:
                slot = next((i for i, a in enumerate(self._actors) if a is actor), None)
                if slot is not None:
                    logger.warning("Ray actor %s died (%s); starting a new one", self._pids[slot], _reason(exc))
                    self._replace(slot)

    def _run(self, plans, bounds):
        ray = self._ray
        deaths_of = _deaths(ray)
        self._drain_side_calls()
        results: List[Optional[EvalRecord]] = [None] * len(plans)
        pending = deque(range(len(plans)))
        deaths: Dict[int, int] = {}
        idle = deque(range(len(self._actors)))
        in_flight: Dict[Any, tuple] = {}  # ref -> (slot, index)
        left = len(plans)
        while left:
            while idle and pending:
                slot, index = idle.popleft(), pending.popleft()
                in_flight[self._actors[slot].run.remote(plans[index], *bounds[index])] = (slot, index)
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            slot, index = in_flight.pop(ref)
            try:
                results[index] = ray.get(ref)
            except deaths_of as exc:
                deaths[index] = deaths.get(index, 0) + 1
                reason = _reason(exc)
                if deaths[index] > MAX_RETRIES:
                    logger.warning("candidate %s killed its Ray actor %d times; recorded as failed",
                                   plans[index].key, deaths[index])
                    results[index] = died_record(plans[index], deaths[index], f"a Ray actor: {reason}")
                    left -= 1
                else:
                    logger.warning("Ray actor %s died evaluating %s (%s); retrying on a new actor",
                                   self._pids[slot], plans[index].key, reason)
                    pending.appendleft(index)
                self._replace(slot)
            except ray.exceptions.RayTaskError as exc:  # e.g. the plan could not be unpickled there
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                results[index] = EvalRecord(plan_key=plans[index].key, accuracy=float("nan"),
                                            error=f"{type(cause).__name__}: {cause}",
                                            summary=dict(plans[index].summary))
                left -= 1
            else:
                left -= 1
            idle.append(slot)
        return results  # type: ignore[return-value]

    def _replace(self, slot: int) -> None:
        """Start a new actor in ``slot`` (blocks until it has set up)."""
        ray = self._ray
        try:
            ray.kill(self._actors[slot])
        except Exception:  # already gone
            pass
        for attempt in range(1, _START_FAILURES + 1):
            actor = self._new_actor()
            try:
                (pid,) = self._wait_started([actor])
            except MopruneError:
                if attempt == _START_FAILURES:
                    raise
                continue
            self._actors[slot], self._pids[slot] = actor, pid
            self.n_restarts += 1
            return

    def close(self) -> None:
        """Kill the actors and, when this pool started or joined Ray, disconnect (idempotent)."""
        self._finalizer()


def _reason(exc: BaseException) -> str:
    """The first line of a Ray error, shortened (the archive keeps it)."""
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {first[:200]}"

