"""The evaluator: the only place that runs candidate networks during a search.

It owns the data (a fixed validation subset, an optional training subset), the batch size,
fine-tuning in the loop (document 000), BatchNorm re-estimation (adaptive BN, EagleEye) and the
cache keyed by the decoded plan.

Where the data live: in the evaluator only (``_val`` and ``_train``). Pickling an evaluator
(and so a :class:`moprune.PruningProblem`, or a pymoo algorithm holding one) leaves the data
out and keeps settings, cache and counters; call :meth:`Evaluator.attach_data` on the unpickled
copy before evaluating. ``copy.deepcopy`` shares the (read-only) data tensors.

Where candidates run: on ``device`` (the data subsets are moved there once, each candidate is
materialized from the base model and moved there, and only numbers come back), in this process
or, with ``workers=N``, in N worker processes (:mod:`moprune.evaluation.workers`) or N Ray actors
(``backend="ray"``, :mod:`moprune.evaluation.ray_pool`) that each get the base model, the index
maps, the data subsets and the settings once. Fine-tuning seeds are
derived from each plan's key, so the records do not depend on which worker ran what.
"""

import contextlib
import copy
import hashlib
import math
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from moprune.devices import Device, check_amp, resolve_device
from moprune.evaluation.cache import EvalRecord, EvaluationCache
from moprune.exceptions import MopruneError, invalid_value
from moprune.logging import get_logger
from moprune.train import batches, zeros_kept
from moprune.train import finetune as _finetune
from moprune.validation import check_bool, check_choice, check_int, check_seed, conflict

if TYPE_CHECKING:  # pragma: no cover
    from moprune.space.base import Plan, Space

logger = get_logger("evaluation")

_FINETUNE_KEYS = ("steps", "lr", "batch_size", "optimizer")
AUTO_FINETUNE = {"steps": 20}
"""What ``finetune="auto"`` (the default) runs when the evaluator has ``train_data``: 20 SGD steps
(lr 0.01, batch 128). Without any, channel-pruned BatchNorm models under about 60% of the MACs
score near chance, and the search cannot rank the small models users retrain (study 8,
``benchmarks/bench_proxy.py``)."""
_BN_CHOICES = ("auto", True, False)
_CHANNELS_LAST_CHOICES = ("auto", True, False)
SCREEN_BATCH = 100
"""Batch size (at most) of screened measurements: errors are checked after every batch."""
BACKENDS = ("local", "ray")
"""Where ``workers`` run: local processes or Ray actors."""
MORE_CONFIRMATION_FROM = 1000
"""Budget in evaluations from which ``confirm_samples="auto"`` confirms on
:data:`MORE_CONFIRMATION_FACTOR` times ``n_samples`` images (:meth:`Evaluator.fit_confirmation`)."""
MORE_CONFIRMATION_FACTOR = 3
"""How many times ``n_samples`` confirmation images ``"auto"`` uses from :data:`MORE_CONFIRMATION_FROM` evaluations."""


def _check_dataset(name, data, *, allow_none=False):
    if data is None and allow_none:
        return None
    if not isinstance(data, TensorDataset) or len(data.tensors) < 2 or len(data) == 0:
        raise invalid_value(name, "a non-empty TensorDataset of (inputs, labels)"
                            + (" or None" if allow_none else ""), type(data).__name__)
    return data


def _subset(data, n, seed, skip=0):
    """Items ``skip`` to ``skip + n`` of a seeded permutation (sorted back), or all of ``data``.

    The same seed gives the same permutation, so ``_subset(data, m, seed, skip=n)`` never shares
    an item with ``_subset(data, n, seed)``.
    """
    if data is None:
        return None
    images, labels = data.tensors[:2]
    if n is None or (not skip and n >= len(images)):
        return TensorDataset(images, labels)
    g = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(images), generator=g)[skip:skip + n].sort().values
    return TensorDataset(images[index], labels[index])


def _permuted(data, n, seed, skip):
    """Items ``skip`` to ``skip + n`` of :func:`_subset`'s permutation, in permutation order, and their indices.

    ``_prefix(_permuted(data, n, seed, skip), k)`` is ``_subset(data, k, seed, skip)`` for any ``k <= n``.
    """
    g = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(data.tensors[0]), generator=g)[skip:skip + n]
    return TensorDataset(data.tensors[0][index], data.tensors[1][index]), index


def _prefix(permuted, k):
    """The first ``k`` items of a :func:`_permuted` pool, sorted back to the data's order (as :func:`_subset`)."""
    pool, index = permuted
    order = torch.argsort(index[:k])
    return TensorDataset(*(t[:k][order] for t in pool.tensors))


def plan_seed(seed, plan_key):
    """A 63-bit seed derived from ``(seed, plan_key)``: same plan, same fine-tuning, in any order."""
    digest = hashlib.sha256(f"{int(seed)}:{plan_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def has_batchnorm(model):
    """Whether ``model`` contains a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class Evaluator:
    """Measures candidates' validation accuracy, with fine-tuning, BN re-estimation and a cache.

    Args:
        val_data: Validation ``TensorDataset`` (never the test split).
        n_samples: Size of the fixed validation subset (a seeded random subset; ``None``: all).
        batch_size: Evaluation batch size (about 250 is fastest on CPU).
        finetune: ``"auto"`` (:data:`AUTO_FINETUNE` when ``train_data`` is given, else none),
            ``None`` (no fine-tuning), an int (number of SGD steps) or a dict of
            :func:`moprune.train.finetune` options (``steps``, ``lr``, ``batch_size``,
            ``optimizer``): document 000's fine-tuning in the loop. An explicit setting needs
            ``train_data``.
        train_data: Training ``TensorDataset`` for fine-tuning and BN re-estimation.
        n_train_samples: Size of the training subset used (seeded random subset; ``None``: all).
        bn_recalibration: ``"auto"`` (re-estimate BatchNorm statistics when the model has
            BatchNorm layers and ``train_data`` is given), ``True`` (always; needs ``train_data``)
            or ``False``.
        bn_batches: Number of training batches for BN re-estimation. The default 4 (1,000
            images at the default batch size) costs about half of 10 and ranks candidates near
            the base about as well (``benchmarks/bench_bn_images.py``: Spearman 0.997 /
            0.994 against 5,000 images on ``resnet8`` / ``vgg_small``).
        bn_batch_size: Batch size for BN re-estimation (default: ``batch_size``).
        confirm_samples: Size of a second validation subset, disjoint from the first (the next
            items of the same seeded permutation), on which the default search measures again
            the candidates that could enter its front, so that a model lucky on the first subset
            does not stay on the front by that luck alone (``confirm_limit``). ``"auto"`` (the
            default): ``n_samples`` more images when the validation data hold twice
            ``n_samples``, else none, and the default search uses up to
            :data:`MORE_CONFIRMATION_FACTOR` times as many (as the data hold) when its budget is
            :data:`MORE_CONFIRMATION_FROM` evaluations or more (:meth:`fit_confirmation`);
            ``None``: none; an int: that many, whatever the budget (needs ``n_samples``, and
            ``n_samples + confirm_samples`` validation images). On ``mnist_cnn`` (1,000 + 1,000
            images, 300 evaluations, 15 seeds) it raised the front's hypervolume measured on
            8,000 held-out images from level with Optuna's TPE to ahead in 12 of 15 seeds, at
            1.47x the search time (``benchmarks/bench_peers.py --confirm-samples``). The more
            near-equal candidates a search compares, the luckier the ones its front keeps: at
            1,000 evaluations, 3,000 images instead of 1,000 put the front ahead of every peer
            held out in 4 of 5 seeds instead of 2 (region hypervolume +0.0041 +- 0.0017 over 10
            seeds, 1.34x the time); at 300 evaluations they do not help.
        seed: Seed of the subsets and of fine-tuning (combined with each plan's key).
        cache: Cache results by plan key.
        cache_size: Maximum number of cached plans (``None``: unbounded).
        num_threads: Torch intra-op threads while evaluating (``None``: leave torch's setting;
            with ``workers``, threads of each worker, default cores // ``workers``).
            Small models on a busy CPU often run far faster with 1.
        device: Where candidates run: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``. The data subsets are
            moved there once.
        amp: Mixed precision of the accuracy measurement on CUDA: ``"bf16"``, ``"fp16"`` or
            ``None`` (full precision; fine-tuning always runs in full precision).
        channels_last: Run candidates with convolution weights in channels-last memory format:
            ``"auto"`` (on the CPU only, where candidates of the zoo's models run 1.1-1.8x
            faster: ``benchmarks/bench_channels_last.py``), ``True`` or ``False``. Results do
            not depend on it beyond floating-point rounding.
        workers: ``None`` (evaluate in this process) or the number of worker processes that
            evaluate a population's candidates in parallel. The pool starts at the first
            :meth:`evaluate` and runs until :meth:`close` (:func:`moprune.search` closes it at
            the end of a search it started; ``with evaluator:`` keeps it over several).
            Workers are new processes: a script must start the search under
            ``if __name__ == "__main__":`` and the model's class must be importable.
        devices: One device per worker (e.g. ``["cuda:0", "cuda:1"]``); worker ``i`` runs on
            ``devices[i % len(devices)]``. ``workers`` defaults to ``len(devices)``. Local
            workers only (Ray gives each actor its GPU).
        backend: Where the ``workers`` run: ``"local"`` (processes on this machine) or
            ``"ray"`` (Ray actors, ``pip install "moprune[ray]"``; needs ``workers``): each
            actor holds one GPU when the cluster has GPUs (unless ``device="cpu"``), otherwise
            ``num_threads`` CPUs. The evaluator's settings, data subsets and space go into
            Ray's object store once; tasks carry only plans.
        address: Ray only: ``None`` (the Ray instance this process is already connected to,
            else a new local instance without dashboard, shut down by :meth:`close`),
            ``"auto"`` or ``"ray://host:port"`` (join that cluster; it stays up after
            :meth:`close`).

    The cache is keyed by plan key only: use one evaluator per base model (sharing it between
    the binary and ratio encodings of one model is fine: equal plans are equal models).

    Attributes:
        n_evaluated: Candidates actually run.
        n_cached: Candidates served from the cache.
        n_failed: Candidates whose evaluation failed (counted in ``n_evaluated``).
        cache: The :class:`EvaluationCache`.
        device: The resolved ``torch.device``.
        worker_pids: Process ids of the running workers or Ray actors (empty when none runs).

    Raises:
        MopruneValueError: An argument is invalid (the message names it).
        MopruneError: ``backend="ray"`` and Ray is not installed (the message gives the install command).
    """

    def __init__(self, val_data: TensorDataset, *, n_samples: Optional[int] = 2000, batch_size: int = 250,
                 finetune: Union[None, str, int, Dict[str, Any]] = "auto", train_data: Optional[TensorDataset] = None,
                 n_train_samples: Optional[int] = None, bn_recalibration: Union[str, bool] = "auto",
                 bn_batches: int = 4, bn_batch_size: Optional[int] = None,
                 confirm_samples: Union[None, str, int] = "auto",
                 seed: int = 0, cache: bool = True,
                 cache_size: Optional[int] = None, num_threads: Optional[int] = None, device: Device = "auto",
                 amp: Optional[str] = None, channels_last: Union[str, bool] = "auto",
                 workers: Optional[int] = None, devices: Optional[Sequence[Device]] = None,
                 backend: str = "local", address: Optional[str] = None) -> None:
        _check_dataset("val_data", val_data)
        _check_dataset("train_data", train_data, allow_none=True)
        self.n_samples = check_int("n_samples", n_samples, low=1, allow_none=True)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.n_train_samples = check_int("n_train_samples", n_train_samples, low=1, allow_none=True)
        if isinstance(finetune, str) and finetune == "auto":
            finetune = None if train_data is None else dict(AUTO_FINETUNE)
        self.finetune = self._check_finetune(finetune)
        if self.finetune is not None and train_data is None:
            raise conflict(("train_data",), "a TensorDataset when finetune is set", None)
        self.bn_recalibration = check_choice("bn_recalibration", bn_recalibration, _BN_CHOICES)
        if bn_recalibration is True and train_data is None:
            raise conflict(("train_data",), "a TensorDataset when bn_recalibration=True", None)
        self.bn_batches = check_int("bn_batches", bn_batches, low=1)
        self.bn_batch_size = check_int("bn_batch_size", bn_batch_size, low=1, allow_none=True) or self.batch_size
        self._confirm_auto = False  # whether fit_confirmation may change the number of confirmation images
        if isinstance(confirm_samples, str):
            if confirm_samples != "auto":
                raise invalid_value("confirm_samples", "'auto', None or a number of images >= 1", confirm_samples)
            twice = self.n_samples is not None and len(val_data) >= 2 * self.n_samples
            confirm_samples = self.n_samples if twice else None
            self._confirm_auto = twice
        self.confirm_samples = check_int("confirm_samples", confirm_samples, low=1, allow_none=True)
        if self.confirm_samples is not None and self.n_samples is None:
            raise conflict(("n_samples",), "a number of images when confirm_samples is set (the rest of the "
                           "validation data holds the confirmation images)", None)
        # the images fit_confirmation can draw on: a prefix of them is the confirmation set in use
        self.confirm_pool = (min(MORE_CONFIRMATION_FACTOR * self.n_samples, len(val_data) - self.n_samples)
                             if self._confirm_auto else self.confirm_samples)
        self.seed = check_seed(seed)
        self.use_cache = check_bool("cache", cache)
        self.num_threads = check_int("num_threads", num_threads, low=1, allow_none=True)
        self.device = resolve_device(device, "device")
        self.amp = amp
        self._amp_dtype = check_amp(amp, self.device)
        self.channels_last = check_choice("channels_last", channels_last, _CHANNELS_LAST_CHOICES)
        if devices is not None:
            if isinstance(devices, (str, torch.device)) or not isinstance(devices, (list, tuple)) or not devices:
                raise invalid_value("devices", "None or a non-empty list of devices, one per worker", devices)
            devices = [resolve_device(d, f"devices[{i}]") for i, d in enumerate(devices)]
            if workers is None:
                workers = len(devices)
            if amp is not None:
                for i, d in enumerate(devices):
                    check_amp(amp, d, f"amp (with devices[{i}]={str(d)!r})")
        self.devices = devices
        self.workers = check_int("workers", workers, low=1, allow_none=True)
        self.backend, self.address = self._check_backend(backend, address, devices)
        # Ray actors take a GPU where the cluster has one, unless the CPU was asked for by name
        self._cpu_only = isinstance(device, (str, torch.device)) and str(device) == "cpu"
        self._pool = None
        self._hold_pool = False
        self.cache = EvaluationCache(max_size=cache_size)
        self.n_evaluated = 0
        self.n_cached = 0
        self.n_failed = 0
        self._val = self._train = self._confirm = self._confirm_source = None
        self._val_order = None  # rank_images' permutation of the validation subset
        self._confirm_order = None  # and of the confirmation images
        self._fingerprint = None
        self.attach_data(val_data, train_data)

    def _check_backend(self, backend, address, devices):
        check_choice("backend", backend, BACKENDS)
        if address is not None and (not isinstance(address, str) or not address):
            raise invalid_value("address", "None, 'auto' or 'ray://host:port'", address)
        if backend == "local":
            if address is not None:
                raise conflict(("backend", "address"), "'ray' when address is given", (backend, address))
            return backend, None
        if self.workers is None:
            raise conflict(("workers",), "a number of Ray actors with backend='ray'", None)
        if devices is not None:
            raise conflict(("devices",), "None with backend='ray' (Ray gives each actor its GPU)", devices)
        from moprune.evaluation.ray_pool import INSTALL, ray_installed

        if not ray_installed():
            raise MopruneError(f"backend='ray' needs Ray, which is not installed here; install it with: {INSTALL}")
        return backend, address

    # ------------------------------------------------------------------ data
    @staticmethod
    def _check_finetune(finetune):
        if finetune is None:
            return None
        if isinstance(finetune, (int, np.integer)) and not isinstance(finetune, bool):
            return {"steps": check_int("finetune", finetune, low=1)}
        if isinstance(finetune, dict):
            unknown = sorted(set(finetune) - set(_FINETUNE_KEYS))
            if unknown:
                raise invalid_value("finetune", f"a dict with keys among {list(_FINETUNE_KEYS)}", finetune)
            options = dict(finetune)
            options.setdefault("steps", 50)
            check_int("finetune['steps']", options["steps"], low=1)
            return options
        raise invalid_value("finetune", "'auto', None, a number of steps (int) or a dict of finetune options",
                            finetune)

    def attach_data(self, val_data: TensorDataset, train_data: Optional[TensorDataset] = None) -> None:
        """(Re)attach the datasets, e.g. after unpickling; the subsets are rebuilt from the seed.

        Raises:
            MopruneError: The data differ from the ones the evaluator was built with.
        """
        _check_dataset("val_data", val_data)
        _check_dataset("train_data", train_data, allow_none=True)
        val = _subset(val_data, self.n_samples, self.seed)
        if getattr(self, "_val_order", None) is not None and len(self._val_order) == len(val):
            val = TensorDataset(*(t[self._val_order] for t in val.tensors))  # rank_images' order
        train = _subset(train_data, self.n_train_samples, self.seed + 1)
        source, pool = None, None
        if getattr(self, "confirm_samples", None) is not None:
            pool = getattr(self, "confirm_pool", None) or self.confirm_samples
            available = len(val_data) - len(val)
            if pool > available:
                raise invalid_value("confirm_samples", f"at most {available} (the validation images outside the "
                                    f"{len(val)}-image subset)", self.confirm_samples)
            source = _permuted(val_data, pool, self.seed, skip=len(val))
        fingerprint = (len(val), len(train) if train is not None else 0,
                       float(val.tensors[0].double().sum()), int(val.tensors[1].sum()), pool or 0)
        if self._fingerprint is not None and fingerprint[:len(self._fingerprint)] != self._fingerprint:  # older: 4
            raise MopruneError("attach_data: these datasets differ from the evaluator's original ones")
        self._fingerprint = fingerprint
        self._confirm_source = source
        self._cpu_subsets = (val, train, self._confirmation_images())
        self._val, self._train, self._confirm = (self._on_device(d) for d in self._cpu_subsets)

    def _confirmation_images(self):
        """The ``confirm_samples`` confirmation images in use (CPU), in :meth:`rank_images`' order if ranked."""
        if self._confirm_source is None:
            return None
        confirm = _prefix(self._confirm_source, self.confirm_samples)
        if getattr(self, "_confirm_order", None) is not None and len(self._confirm_order) == len(confirm):
            confirm = TensorDataset(*(t[self._confirm_order] for t in confirm.tensors))
        return confirm

    def fit_confirmation(self, n_evals: Optional[int]) -> Optional[int]:
        """Fit the number of confirmation images to a search of ``n_evals`` evaluations.

        Only with ``confirm_samples="auto"``: ``n_samples`` images below
        :data:`MORE_CONFIRMATION_FROM` evaluations (or for an unknown budget, ``None``), and
        :data:`MORE_CONFIRMATION_FACTOR` times as many from it, as far as the validation data
        hold them. The images are a prefix of one seeded draw, so the smaller set is part of the
        larger. Cached records confirmed on another number of images are measured again when
        asked for; a running worker pool is closed (the next evaluation starts one with the new
        images). The default search calls it when it starts.

        Returns:
            The number of confirmation images now in use (``None``: none).

        Raises:
            MopruneValueError: ``n_evals`` is not ``None`` or a number >= 1.
        """
        n_evals = check_int("n_evals", n_evals, low=1, allow_none=True)
        if not self._confirm_auto:
            return self.confirm_samples
        self._require_data()
        more = n_evals is not None and n_evals >= MORE_CONFIRMATION_FROM
        wanted = min(MORE_CONFIRMATION_FACTOR * self.n_samples, self.confirm_pool) if more else self.n_samples
        if wanted != self.confirm_samples:
            self.confirm_samples = wanted
            self._confirm_order = None  # rank_images orders the new set when asked (see images_ranked)
            val, train, _ = self._cpu_subsets
            self._cpu_subsets = (val, train, self._confirmation_images())
            self._confirm = self._on_device(self._cpu_subsets[2])
            self.close()
        return self.confirm_samples

    def _on_device(self, data):
        if data is None or all(t.device == self.device for t in data.tensors):
            return data
        return TensorDataset(*(t.to(self.device) for t in data.tensors))

    @property
    def val_subset(self) -> TensorDataset:
        """The fixed validation subset every candidate is measured on."""
        self._require_data()
        return self._val

    @property
    def confirm_subset(self) -> Optional[TensorDataset]:
        """The confirmation images (``confirm_samples``, disjoint from :attr:`val_subset`), or ``None``."""
        self._require_data()
        return self._confirm

    @property
    def train_subset(self) -> Optional[TensorDataset]:
        """The training subset used for fine-tuning and BN re-estimation (or ``None``)."""
        self._require_data()
        return self._train

    def _require_data(self):
        if self._val is None:
            raise MopruneError("this Evaluator was unpickled without its data; call attach_data() first")

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_val"] = state["_train"] = state["_confirm"] = state["_cpu_subsets"] = state["_pool"] = None
        state["_confirm_source"] = None
        state["_hold_pool"] = False
        return state

    def __setstate__(self, state):
        state.setdefault("_cpu_subsets", None)
        state.setdefault("_pool", None)
        state.setdefault("_hold_pool", False)
        for key, value in (("device", torch.device("cpu")), ("amp", None), ("_amp_dtype", None),
                           ("workers", None), ("devices", None), ("backend", "local"), ("address", None),
                           ("_cpu_only", False), ("channels_last", False), ("_val_order", None),
                           ("confirm_samples", None), ("_confirm", None), ("_confirm_order", None),
                           ("_confirm_auto", False), ("_confirm_source", None)):
            state.setdefault(key, value)
        state.setdefault("confirm_pool", state["confirm_samples"])
        self.__dict__.update(state)

    def __deepcopy__(self, memo):
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "_pool":
                value = None  # a copy starts its own pool when it needs one
            elif key == "_hold_pool":
                value = False
            elif key not in ("_val", "_train", "_confirm", "_cpu_subsets", "_confirm_source"):
                value = copy.deepcopy(value, memo)
            new.__dict__[key] = value
        return new

    # --------------------------------------------------------------- workers
    def for_worker(self, device: torch.device, subsets: tuple) -> "Evaluator":
        """A settings-only copy for a worker process: no cache, no pool, ``subsets`` on ``device``.

        It pickles with its data (unlike an evaluator), which the worker receives once.
        """
        new = object.__new__(_WorkerEvaluator)
        state = self.__getstate__()
        state.update(cache=EvaluationCache(), workers=None, devices=None, device=device, _fingerprint=None,
                     _cpu_subsets=subsets, backend="local", address=None)
        new.__dict__.update(state)
        return new

    @property
    def worker_pids(self) -> List[int]:
        """Process ids of the running worker processes or Ray actors (empty when none runs)."""
        return [] if self._pool is None or not self._pool.alive else self._pool.pids

    def _pool_for(self, space):
        from moprune.evaluation.workers import WorkerPool, default_threads

        if self._pool is not None and not self._pool.alive:
            self._pool = None
        if self._pool is None:
            self._require_data()
            if self.backend == "ray":
                from moprune.evaluation.ray_pool import RayPool

                # a local instance shares this machine's cores, as local workers do; a cluster's actors get 1 each
                threads = self.num_threads or (default_threads(self.workers) if self.address is None else 1)
                self._pool = RayPool(self, self._cpu_subsets, space, n_workers=self.workers, threads=threads,
                                     address=self.address, cpu_only=self._cpu_only)
            else:
                threads = self.num_threads or default_threads(self.workers)
                self._pool = WorkerPool(self, self._cpu_subsets, space, n_workers=self.workers, threads=threads,
                                        devices=self.devices or [self.device])
                logger.info("started %d worker processes (%d torch threads each)", self.workers, threads)
        else:
            self._pool.set_space(space)
        return self._pool

    def close(self) -> None:
        """Shut the worker processes or Ray actors down (a no-op without them); the next evaluation starts new ones.

        A local Ray instance that the evaluator started is shut down too; a joined cluster stays up.
        """
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextlib.contextmanager
    def session(self) -> Iterator["Evaluator"]:
        """Context of one search: a worker pool started inside it is shut down on leaving it.

        A pool already running when the context is entered (``with evaluator:``) is left running.
        The shutdown happens on success, on error and on Ctrl-C.
        """
        running = self._hold_pool or (self._pool is not None and self._pool.alive)
        try:
            yield self
        finally:
            if not running:
                self.close()

    def __enter__(self) -> "Evaluator":
        """Keep the worker pool (once started) running over several searches, until the block ends."""
        self._hold_pool = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._hold_pool = False
        self.close()

    # ------------------------------------------------------------- counters
    def reset_counters(self) -> None:
        """Set ``n_evaluated``, ``n_cached`` and ``n_failed`` to zero (the cache is kept)."""
        self.n_evaluated = self.n_cached = self.n_failed = 0

    def counters(self) -> Dict[str, int]:
        """``{"n_evaluated", "n_cached", "n_failed"}`` as a dict."""
        return {"n_evaluated": self.n_evaluated, "n_cached": self.n_cached, "n_failed": self.n_failed}

    def state_dict(self) -> dict:
        """What changes while searching: the counters and the cache, as a picklable dict.

        A run's checkpoint stores it; :meth:`load_state_dict` puts it back (settings and data
        are not in it: they come from the constructor).
        """
        return {"counters": self.counters(), "cache": self.cache.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters and the cache saved by :meth:`state_dict`.

        Raises:
            MopruneValueError: ``state`` is not such a dict.
        """
        if not isinstance(state, dict) or set(state) != {"counters", "cache"} \
                or not isinstance(state["counters"], dict) or set(state["counters"]) != set(self.counters()):
            raise invalid_value("state", "a dict made by Evaluator.state_dict()",
                                sorted(state) if isinstance(state, dict) else type(state).__name__)
        self.cache.load_state_dict(state["cache"])
        for key, value in state["counters"].items():
            setattr(self, key, int(value))

    # ------------------------------------------------------------ evaluation
    def accuracy(self, model: nn.Module) -> float:
        """Top-1 accuracy in [0, 1] of ``model`` (eval mode) on the validation subset."""
        return self._measure(model)[0]

    @torch.inference_mode()
    def _measure(self, model, max_errors=None, data=None):
        """``(accuracy, screened)`` of ``model`` on the validation subset (or on ``data``).

        With ``max_errors``, measurement stops once the model has made more errors than that
        (``screened``); the accuracy is then the upper bound ``(n - errors_seen) / n``.
        """
        self._require_data()
        data = self._val if data is None else data
        model.eval()
        errors, n = 0, len(data)
        batch_size = self.batch_size if max_errors is None else min(self.batch_size, SCREEN_BATCH)
        autocast = (torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)
                    if self._amp_dtype is not None else contextlib.nullcontext())
        with autocast:
            for x, y in batches(data, batch_size):
                errors += int((model(x).argmax(1) != y).sum())
                if max_errors is not None and errors > max_errors:
                    return (n - errors) / n, True
        return (n - errors) / n, False

    @property
    def images_ranked(self) -> bool:
        """Whether :meth:`rank_images` has ordered the validation subset and the confirmation images in use."""
        return self._val_order is not None and (self._confirm is None or self._confirm_order is not None)

    @torch.inference_mode()
    def rank_images(self, model: nn.Module) -> None:
        """Order the validation subset hardest first for ``model`` (smallest logit margin first).

        Screened measurements (``max_errors``) then see most of a candidate's errors in the
        first batches and stop early; full measurements are unchanged (the same images). The
        confirmation images are ordered the same way. The order is kept through pickling and
        :meth:`attach_data`.
        """
        self._require_data()
        model = copy.deepcopy(model)
        with self.threads():
            model = self._to_device(model).eval()
            order = self._hardest_first(model, self._val)
            confirm_order = None if self._confirm is None else self._hardest_first(model, self._confirm)
        current = self._val_order if self._val_order is not None else torch.arange(len(order))
        self._val_order = current[order]
        val, train, confirm = self._cpu_subsets
        val = TensorDataset(*(t[order] for t in val.tensors))
        if confirm_order is not None:
            current = self._confirm_order if self._confirm_order is not None else torch.arange(len(confirm_order))
            self._confirm_order = current[confirm_order]
            confirm = TensorDataset(*(t[confirm_order] for t in confirm.tensors))
        self._cpu_subsets = (val, train, confirm)
        self._val, self._confirm = self._on_device(val), self._on_device(confirm)

    def _hardest_first(self, model, data):
        """The permutation of ``data`` by ``model``'s logit margin of the true class, smallest first."""
        margins = []
        for x, y in batches(data, self.batch_size):
            out = model(x).float()
            true = out.gather(1, y[:, None])[:, 0]
            rest = out.scatter(1, y[:, None], float("-inf")).max(1).values
            margins.append((true - rest).cpu())
        return torch.argsort(torch.cat(margins), stable=True)

    def evaluate_model(self, model: nn.Module, *, confirmation: bool = False) -> float:
        """Accuracy of an unpruned model (no fine-tuning, no BN re-estimation): the base accuracy.

        ``model`` is measured on a copy on the evaluator's device (it stays where it is).

        Args:
            model: The model.
            confirmation: Measure it on the validation subset and the confirmation images
                together (as a confirmed candidate is; needs ``confirm_samples``).
        """
        if confirmation and self.confirm_subset is None:
            raise conflict(("confirm_samples",), "a number of images for evaluate_model(confirmation=True)", None)
        with self.threads():
            if self._wants_channels_last() or any(p.device != self.device for p in model.parameters()):
                model = self._to_device(copy.deepcopy(model))  # measured as the candidates are
            accuracy = self.accuracy(model)
            if confirmation:
                accuracy = self._pooled(accuracy, self._measure(model, data=self._confirm)[0])
            return accuracy

    def _pooled(self, accuracy, confirm_accuracy):
        """Accuracy over the validation subset and the confirmation images together."""
        n, c = len(self._val), len(self._confirm)
        return (accuracy * n + confirm_accuracy * c) / (n + c)

    def _wants_channels_last(self):
        return self.channels_last is True or (self.channels_last == "auto" and self.device.type == "cpu")

    def _to_device(self, model):
        """``model`` on the evaluator's device, in the memory format candidates run in."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self._wants_channels_last() else model

    def _recalibrate_bn(self, model):
        """Re-estimate BatchNorm running statistics on a few training batches (adaptive BN)."""
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        saved = [(m, m.momentum) for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the batches seen
        model.train()
        with torch.no_grad():
            for i, (x, _) in enumerate(batches(self._train, self.bn_batch_size)):
                if i >= self.bn_batches:
                    break
                model(x)
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()

    def _wants_bn(self, model):
        if self.bn_recalibration is False or self._train is None:
            return False
        return has_batchnorm(model)

    def run(self, space: "Space", plan: "Plan", max_errors: Optional[int] = None,
            confirm_limit: Optional[int] = None, max_pooled_errors: Optional[int] = None) -> EvalRecord:
        """Evaluate one plan without the cache: materialize, fine-tune, re-estimate BN, measure.

        Failures (an exception, a non-finite fine-tuning loss) are caught and returned as a
        record with ``accuracy=nan`` and the error message.

        Args:
            space: The plan's space.
            plan: The plan.
            max_errors: Stop measuring once the candidate made more validation errors than
                this (``None``: measure all); the record is then ``screened``.
            confirm_limit: Measure the candidate on the confirmation images as well when it
                made at most this many errors on the subset (``None``: never; needs
                ``confirm_samples``); the record's ``confirmed_accuracy`` is then its accuracy
                over both.
            max_pooled_errors: Stop measuring the confirmation images once the candidate made
                more errors than this on both sets together (``None``: measure all); the record
                is then ``screened`` and its ``confirmed_accuracy`` an upper bound.
        """
        self._require_data()
        start = time.perf_counter()
        loss = float("nan")
        screened = False
        confirmed = None
        try:
            if self.finetune is not None:
                model, loss = self.finetune_plan(space, plan, seed=plan_seed(self.seed, plan.key))
                if not math.isfinite(loss):
                    raise FloatingPointError(f"fine-tuning loss is {loss}")
            else:
                model = self._to_device(space.materialize(plan))
            if self._wants_bn(model):
                self._recalibrate_bn(model)
            accuracy, screened = self._measure(model, max_errors)
            if self._confirms(accuracy, screened, confirm_limit):
                left = None if max_pooled_errors is None else max(-1, int(max_pooled_errors) - self._errors(accuracy))
                confirm_accuracy, screened = self._measure(model, left, data=self._confirm)
                confirmed = self._pooled(accuracy, confirm_accuracy)
            error = None
        except Exception as exc:  # a failing candidate must not stop the search
            accuracy, error = float("nan"), f"{type(exc).__name__}: {exc}"
            logger.warning("candidate %s failed: %s", plan.key, error)
        return EvalRecord(plan_key=plan.key, accuracy=accuracy, seconds=time.perf_counter() - start,
                          cached=False, error=error, loss=loss, summary=dict(plan.summary), screened=screened,
                          confirmed_accuracy=confirmed, confirm_images=None if confirmed is None else len(self._confirm))

    def _errors(self, accuracy):
        """Errors on the validation subset of a record's ``accuracy``."""
        return int(round((1.0 - accuracy) * len(self._val)))

    def _confirms(self, accuracy, screened, confirm_limit):
        """Whether a candidate measured at ``accuracy`` on the subset is measured on the confirmation images too."""
        return (confirm_limit is not None and self._confirm is not None and not screened
                and self._errors(accuracy) <= confirm_limit)

    def finetune_plan(self, space: "Space", plan: Union["Plan", np.ndarray], *, seed: int,
                      **options: Any) -> Tuple[nn.Module, float]:
        """Materialize ``plan`` and fine-tune it on the training subset; the fine-tuning in the loop.

        The evaluator's own fine-tuning (``finetune=...``) runs through here, and so can a caller
        that needs a plan fine-tuned the same way (e.g. ``two_step`` retraining its elite).

        Args:
            space: The :class:`moprune.space.Space` of the plan.
            plan: A plan decoded by ``space`` (or a genome).
            seed: Seeds the batch order (a ``torch.Generator``) and torch's global generator
                (dropout), which is forked so the caller's state is restored: the same seed
                gives the same model whatever was evaluated before.
            **options: :func:`moprune.train.finetune` options (``steps``, ``lr``,
                ``batch_size``, ``optimizer``); default: the evaluator's ``finetune`` settings.

        Returns:
            ``(model, loss)``: the fine-tuned model and its mean training loss (possibly not
            finite; the caller decides). An unstructured plan's pruned weights stay zero.

        Raises:
            MopruneError: No training data (``train_data``) or data not attached.
        """
        self._require_data()
        if self._train is None:
            raise MopruneError("fine-tuning needs training data: Evaluator(train_data=...)")
        options = {**(self.finetune or {}), **options}
        if not hasattr(plan, "kind"):  # a genome
            plan = space.decode(plan)
        model = self._to_device(space.materialize(plan))
        # an unstructured plan's pruned weights must stay zero while fine-tuning
        keep = zeros_kept(model) if plan.kind == "weights" else contextlib.nullcontext()
        # dropout draws from torch's global generator: fork it, so that the result depends on the
        # seed only (not on evaluation order) and the caller's state is restored
        with self.threads(), keep, torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            loss = float(_finetune(model, self._train, generator=torch.Generator().manual_seed(int(seed)),
                                   progress=False, device=self.device, **options))
        return model, loss

    @contextlib.contextmanager
    def threads(self) -> Iterator[None]:
        """Context in which torch uses :attr:`num_threads` threads (restored on exit)."""
        if self.num_threads is None:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def evaluate(self, space: "Space", X: np.ndarray, error_bounds: Optional[Sequence[Optional[int]]] = None,
                 confirm_limits: Optional[Sequence[Optional[int]]] = None,
                 pooled_bounds: Optional[Sequence[Optional[int]]] = None) -> List[EvalRecord]:
        """Evaluate a population.

        Args:
            space: The :class:`moprune.space.Space` the genomes belong to.
            X: Genomes, ``n x space.n_var``.
            error_bounds: Optional, one per genome: ``None`` or the number of validation errors
                beyond which the candidate cannot matter (a model at most as costly made that
                many); its measurement stops there (see :meth:`run`). A screened record in the
                cache serves a genome only while it still exceeds the genome's bound.
            confirm_limits: Optional, one per genome: ``None`` or the most errors on the subset
                with which the candidate is measured on the confirmation images too (see
                :meth:`run`). A cached record that was not confirmed but now would be is run again.
            pooled_bounds: Optional, one per genome: ``None`` or the number of errors on the
                subset and the confirmation images together beyond which a confirmed candidate
                cannot matter (``max_pooled_errors`` of :meth:`run`).

        Returns:
            A list of ``n`` :class:`EvalRecord`, in the order of ``X``. A plan already in the
            cache (or earlier in ``X``) is not run again and comes back with ``cached=True``.
            With ``workers``, the plans to run are spread over the worker processes; the
            records are the same as in one process.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != space.n_var:
            raise invalid_value("X", f"an n x {space.n_var} array of genomes", f"array of shape {X.shape}")
        if error_bounds is None:
            error_bounds = [None] * len(X)
        elif len(error_bounds) != len(X):
            raise invalid_value("error_bounds", f"None or {len(X)} bounds (one per genome)", len(error_bounds))
        confirm_limits = self._per_genome("confirm_limits", confirm_limits, len(X))
        pooled_bounds = self._per_genome("pooled_bounds", pooled_bounds, len(X))
        # decide per genome: undecodable, served by the cache, served by an earlier genome of X, or run
        entries, to_run, bounds, first = [], [], [], {}
        for x, bound, limit, pooled in zip(X, error_bounds, confirm_limits, pooled_bounds):
            try:
                plan = space.decode(x)
            except Exception as exc:  # an undecodable genome is a failed candidate
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("genome could not be decoded: %s", error)
                entries.append(("failed", error))
                continue
            hit = self.cache.get(plan.key) if self.use_cache else None
            if hit is not None and hit.screened and not self._still_screened(hit, bound):
                hit = None  # stopped early against a bound this genome does not have: measure again
            elif hit is not None and hit.confirmed_accuracy is None and not hit.failed \
                    and self._confirms(hit.accuracy, hit.screened, limit):
                hit = None  # measured on the subset only, and this genome's limit asks for confirmation
            if hit is not None and hit.confirmed_accuracy is not None \
                    and hit.confirm_images != (None if self._confirm is None else len(self._confirm)):
                hit = None  # confirmed on another number of images (fit_confirmation since): measure again
            if hit is not None:
                entries.append(("cached", hit))
            elif self.use_cache and plan.key in first:
                entries.append(("again", first[plan.key]))
            else:
                first[plan.key] = len(to_run)
                entries.append(("run", len(to_run)))
                to_run.append(plan)
                bounds.append(tuple(None if v is None else int(v) for v in (bound, limit, pooled)))
        records = self._run_plans(space, to_run, bounds)
        out = []
        for kind, value in entries:
            if kind == "failed":
                self.n_evaluated += 1
                self.n_failed += 1
                out.append(EvalRecord(plan_key="<undecodable>", accuracy=float("nan"), error=value))
            elif kind == "cached":
                self.n_cached += 1
                out.append(value.as_cached())
            elif kind == "again":
                self.n_cached += 1
                out.append(records[value].as_cached())
            else:
                record = records[value]
                self.n_evaluated += 1
                self.n_failed += record.failed
                if self.use_cache:
                    self.cache.put(record)
                out.append(record)
        return out

    @staticmethod
    def _per_genome(name, values, n):
        if values is None:
            return [None] * n
        if len(values) != n:
            raise invalid_value(name, f"None or {n} values (one per genome)", len(values))
        return list(values)

    def _still_screened(self, record, bound):
        """Whether a screened ``record`` made more errors than ``bound`` (so it still need not be measured)."""
        if bound is None:
            return False
        return self._errors(record.accuracy) > bound

    def _run_plans(self, space, plans, limits=None):
        """Records of ``plans`` (in order), run in this process or on the workers.

        ``limits``: per plan, ``(max_errors, confirm_limit, max_pooled_errors)`` of :meth:`run` (``None``: none).
        """
        if not plans:
            return []
        limits = [(None, None, None)] * len(plans) if limits is None else limits
        if self.workers is None:
            from moprune.evaluation.workers import trim_memory

            with self.threads():
                records = [self.run(space, plan, *limit) for plan, limit in zip(plans, limits)]
            trim_memory()  # hand the freed candidates' memory back, so a long search does not grow
            return records
        return self._pool_for(space).run(plans, limits)

    def __repr__(self):
        return (f"Evaluator(n_samples={self.n_samples}, batch_size={self.batch_size}, "
                f"finetune={self.finetune}, bn_recalibration={self.bn_recalibration!r}, "
                f"seed={self.seed}, device={str(self.device)!r}, workers={self.workers}, "
                + (f"backend='ray', address={self.address!r}, " if self.backend == "ray" else "")
                + f"cached={len(self.cache)})")


class _WorkerEvaluator(Evaluator):
    """The evaluator a worker process holds: it pickles with its data subsets (sent once)."""

    def __getstate__(self):
        state = super().__getstate__()
        state["_cpu_subsets"] = self.__dict__["_cpu_subsets"]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        val, train, confirm = self._cpu_subsets
        self._val, self._train, self._confirm = self._on_device(val), self._on_device(train), self._on_device(confirm)
