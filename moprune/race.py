"""Retraining race: among models of one size, find the one that retrains best.

The search ranks candidates by an accuracy measured before retraining; on some networks
(``resnet8`` on Fashion-MNIST) the allocations it prefers retrain worse than keeping the same
fraction of channels in every layer. A race measures what the user ends with instead: several
contenders of about the same MACs are retrained briefly, the better half is kept and retrained
longer (successive halving), and the survivor meets the uniform model in a final at the full
retraining budget. :func:`moprune.retrain_front` runs one per front point when asked (``race=``).
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from moprune.data import Splits
from moprune.devices import Device, resolve_device
from moprune.logging import get_logger
from moprune.train import evaluate, fit, zeros_kept
from moprune.validation import check_int, check_real, check_seed

_log = get_logger(__name__)

RACE_SIGMA = 0.35
"""Spread (standard deviation of the log keep ratio) of the random allocations around uniform."""

RACE_TILTS = (0.15, 0.3)
"""Tilts of the parameter-tilted contenders (:func:`moprune.operators.pruning.tilted_allocation`)."""


def race_contenders(space, genome: np.ndarray, n: int, *, history: Optional[pd.DataFrame] = None,
                    macs_ratio: Optional[float] = None, tolerance: float = 0.10, sigma: float = RACE_SIGMA,
                    tilts: Sequence[float] = RACE_TILTS, seed: int = 0) -> List[Tuple[str, np.ndarray]]:
    """Up to ``n`` genomes of about the MACs of ``genome`` to race against each other.

    In this order: ``genome`` itself (``"search"``); parameter-tilted allocations of
    ``macs_ratio`` (``"params_tilt"``, one per tilt: the budget moved towards the groups that hold
    many parameters per MAC, which at equal MACs tend to retrain better); the search's most accurate other
    fully measured (not ``screened``) candidates whose MACs are at most ``macs_ratio`` and within ``tolerance`` below it (``"search_neighbor"``,
    one per distinct plan); then random allocations (``"random"``): per-group keep ratios drawn
    log-normally around the uniform one (spread ``sigma``) and rescaled to ``macs_ratio``.

    Args:
        space: The search's :class:`moprune.space.Space`.
        genome: The front point's genome.
        n: How many contenders, at least 1.
        history: Every evaluated candidate (:func:`moprune.to_frame` of the search), or ``None``.
        macs_ratio: The size the other contenders keep to (``None``: ``genome``'s MACs ratio);
            :func:`moprune.retrain_front` passes the smaller of the point's and its uniform twin's,
            so that no contender but the point itself is larger than the twin it meets.
        tolerance: Relative MACs window of the neighbors, in [0, 1).
        sigma: Spread of the random allocations (log keep ratio), > 0.
        tilts: Tilts of the parameter-tilted contenders (``()``: none).
        seed: Seeds the random allocations.

    Returns:
        ``(source, genome)`` pairs, the front point first.
    """
    from moprune.operators.pruning import allocation_genome, tilted_allocation

    n = check_int("n", n, low=1)
    tolerance = check_real("tolerance", tolerance, low=0, high=1, high_open=True)
    sigma = check_real("sigma", sigma, low=0, low_open=True)
    genome = np.asarray(genome)
    macs = float(space.cost(genome[None, :])["macs_ratio"][0]) if macs_ratio is None else \
        check_real("macs_ratio", macs_ratio, low=0, high=1, low_open=True)
    chosen: List[Tuple[str, np.ndarray]] = [("search", genome)]
    seen_bytes = {genome.tobytes()}
    for tilt in tilts:
        if len(chosen) >= n:
            break
        other = tilted_allocation(space, macs, tilt)
        if other.tobytes() not in seen_bytes:
            seen_bytes.add(other.tobytes())
            chosen.append(("params_tilt", other))
    if history is not None and len(chosen) < n:
        measured = ~history["screened"].astype(bool) if "screened" in history.columns else True  # bounds only
        near = history[history["error_message"].isna() & measured & (history["macs_ratio"] <= macs * (1 + 1e-9))
                       & (history["macs_ratio"] >= macs * (1 - tolerance))]
        near = near.sort_values("accuracy", ascending=False)
        keys = set()
        for _, row in near.iterrows():
            if len(chosen) >= n:
                break
            key = row.get("plan_key", None)
            other = np.asarray(row["genome"])
            if other.tobytes() in seen_bytes or (key is not None and key in keys):
                continue
            keys.add(key)
            seen_bytes.add(other.tobytes())
            chosen.append(("search_neighbor", other))
    rng = np.random.default_rng(seed)
    n_groups = len(space.group_slices)
    for _ in range(4 * n):  # a few draws may land on a genome taken already
        if len(chosen) >= n:
            break
        other = allocation_genome(space, np.exp(rng.normal(0.0, sigma, n_groups)), macs)
        if other.tobytes() not in seen_bytes:
            seen_bytes.add(other.tobytes())
            chosen.append(("random", other))
    return chosen


def _short_retrain(space, genome, *, data, steps, seed, device, eval_batch_size, fit_options):
    """Validation accuracy of ``genome`` after ``steps`` retraining steps (the test split is not read)."""
    model = space.materialize(genome)
    generator = torch.Generator().manual_seed(int(seed))
    steps_per_epoch = math.ceil(len(data.train) / int(fit_options.get("batch_size", 128)))
    with zeros_kept(model):
        fit(model, data.train, epochs=math.ceil(steps / steps_per_epoch), max_steps=steps, generator=generator,
            progress=False, desc="race", device=device, **fit_options)
    accuracy = evaluate(model, data.val, batch_size=eval_batch_size, device=device)
    model.cpu()
    return accuracy


def successive_halving(space, contenders: List[Tuple[str, np.ndarray]], *, data: Splits, budget_steps: int,
                       seed: int = 0, device: Device = "auto", **fit_options: Any) -> Tuple[int, pd.DataFrame]:
    """Race ``contenders`` by short retrainings until one is left.

    Round ``i`` retrains every remaining contender from its inherited weights for
    ``budget_steps * 2**i / len(contenders)`` steps (so each round costs about one full
    retraining), measures it on the validation split and keeps the better half.

    Args:
        space: The space that rebuilds each genome.
        contenders: ``(source, genome)`` pairs (see :func:`race_contenders`).
        data: A :class:`moprune.data.Splits`; the test split is not read.
        budget_steps: Optimizer steps of one full retraining.
        seed: Seed of every short retraining.
        device: Where to train.
        **fit_options: :func:`moprune.train.fit` options (``lr``, ``batch_size``, ``augment``, ...).

    Returns:
        ``(index of the winner in contenders, frame of every round)``, the frame with one row per
        contender and round: ``contender``, ``source``, ``round``, ``steps``, ``val_accuracy``.
    """
    budget_steps = check_int("budget_steps", budget_steps, low=1)
    seed = check_seed(seed)
    device = resolve_device(device)
    options = dict(fit_options)
    eval_batch_size = options.pop("eval_batch_size", 250)
    alive = list(range(len(contenders)))
    rows: List[Dict[str, Any]] = []
    round_ = 0
    while len(alive) > 1:
        steps = max(1, int(budget_steps * 2 ** round_ / len(contenders)))
        scores = {}
        for i in alive:
            scores[i] = _short_retrain(space, contenders[i][1], data=data, steps=steps, seed=seed, device=device,
                                       eval_batch_size=eval_batch_size, fit_options=options)
            rows.append({"contender": i, "source": contenders[i][0], "round": round_, "steps": steps,
                         "val_accuracy": scores[i]})
        ranked = sorted(alive, key=lambda i: (-scores[i], i))  # ties: the earlier contender
        alive = ranked[:max(1, len(alive) // 2)]
        _log.info("race round %d (%d steps): kept %s", round_, steps, alive)
        round_ += 1
    return alive[0], pd.DataFrame(rows, columns=["contender", "source", "round", "steps", "val_accuracy"])
