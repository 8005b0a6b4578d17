"""Retraining race: among models of one size, find the one that retrains best.

The search ranks candidates by an accuracy measured before retraining; on some networks
(``resnet8`` on Fashion-MNIST) the allocations it prefers retrain worse than keeping the same
fraction of channels in every layer. A race measures what the user ends with instead: several
contenders of about the same MACs are retrained briefly, the better half is kept and retrained
longer (successive halving), and the survivor meets the uniform model in a final at the full
retraining budget. :func:`moprune.retrain_front` runs one per front point when asked (``race=``);
:func:`retrain_within` runs one at the size of a MACs budget, where channel-pruned and
decomposed models (:func:`decomposed_contenders`) race beside the pruned ones.
"""

import copy
import math
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from moprune.data import Splits
from moprune.devices import Device, resolve_device
from moprune.logging import get_logger
from moprune.train import evaluate, fit, zeros_kept
from moprune.validation import check_bool, check_int, check_real, check_seed

if TYPE_CHECKING:  # pragma: no cover
    from moprune.archive import SearchResult

_log = get_logger(__name__)

RACE_SIGMA = 0.35
"""Spread (standard deviation of the log keep ratio) of the random allocations around uniform."""

RACE_TILTS = (0.15, 0.3)
"""Tilts of the parameter-tilted contenders (:func:`moprune.operators.pruning.tilted_allocation`)."""

DECOMPOSE_DRAWS = 256
"""Decomposed models measured before retraining, of which the most accurate join the race."""

DECOMPOSE_MIN_FILL = 0.9
"""A decomposed draw uses at least this share of the size it is drawn at (else it is drawn again)."""


def race_contenders(space, genome: np.ndarray, n: int, *, history: Optional[pd.DataFrame] = None,
                    macs_ratio: Optional[float] = None, tolerance: float = 0.10, sigma: float = RACE_SIGMA,
                    tilts: Sequence[float] = RACE_TILTS, seed: int = 0,
                    at_most: bool = False) -> List[Tuple[str, np.ndarray]]:
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
        at_most: The tilted and random allocations never exceed ``macs_ratio`` (a budget) where
            an allocation at or below it exists; otherwise they are the nearest to it on either side.

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
        other = tilted_allocation(space, macs, tilt, at_most=at_most)
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
        other = allocation_genome(space, np.exp(rng.normal(0.0, sigma, n_groups)), macs, at_most=at_most)
        if other.tobytes() not in seen_bytes:
            seen_bytes.add(other.tobytes())
            chosen.append(("random", other))
    return chosen


def decomposed_contenders(base_model: torch.nn.Module, macs_ratio: float, n: int, *, data: Splits,
                          draws: int = DECOMPOSE_DRAWS, sigma: float = 0.5, seed: int = 0, n_samples: int = 1000,
                          device: Device = "auto") -> Tuple[Any, List[Tuple[str, np.ndarray]]]:
    """The ``n`` most accurate of ``draws`` channel-pruned *and* decomposed models of a size.

    Document 004's "D + Ps" (:class:`moprune.space.LowRankChannelSpace`, built with its defaults:
    every layer, channels ranked by L1 norm, whatever the search's own space was restricted to):
    at a few percent of the MACs, a model that keeps more channels and factorises its layers
    (truncated SVD, Tucker-2) can retrain better than one pruned to the same MACs; on
    ``mnist_cnn`` it does (the session-25 log of ``docs/search_quality.md``). Each draw takes
    random rank levels and per-group channel shares (log-normal, spread ``sigma``), then the
    largest common channel factor whose MACs stay at or below ``macs_ratio`` (at least
    :data:`DECOMPOSE_MIN_FILL` of it). Draws are measured on
    ``n_samples`` validation images without fine-tuning (BatchNorm statistics re-estimated on
    training images where the model has BatchNorm).

    Args:
        base_model: The unpruned model (not modified).
        macs_ratio: The size, a fraction of the base model's MACs in (0, 1].
        n: Contenders returned (fewer when fewer distinct plans fit), at least 1.
        data: A :class:`moprune.data.Splits` (validation and training images; test is not read).
        draws: Models drawn and measured, at least ``n``.
        sigma: Spread of the log channel shares, > 0.
        seed: Seeds the draws and the validation images.
        n_samples: Validation images each draw is measured on.
        device: Where the draws are measured.

    Returns:
        ``(space, [("decomposed", genome), ...])``: the :class:`moprune.space.LowRankChannelSpace`
        that rebuilds the genomes, and the contenders, most accurate first.
    """
    from moprune.evaluation import Evaluator
    from moprune.space import LowRankChannelSpace

    macs_ratio = check_real("macs_ratio", macs_ratio, low=0, high=1, low_open=True, unit="MACs ratio")
    n = check_int("n", n, low=1)
    draws = check_int("draws", draws, low=n)
    sigma = check_real("sigma", sigma, low=0, low_open=True)
    seed = check_seed(seed)
    space = LowRankChannelSpace(base_model)
    rng = np.random.default_rng(seed)
    n_ch, levels = space.n_channel_genes, space.channel_levels
    scales = np.geomspace(1.0 / levels, 1.0, 96)
    genomes: List[np.ndarray] = []
    for _ in range(20 * draws):  # some draws cannot reach the size: their ranks are too small
        if len(genomes) >= draws:
            break
        ranks = rng.integers(space.xl[n_ch:], space.xu[n_ch:] + 1)
        shares = np.exp(rng.normal(0.0, sigma, n_ch))
        shares = shares / shares.max()
        channel = np.clip(np.ceil(scales[:, None] * shares[None, :] * levels), 1, levels).astype(np.int64)
        grid = np.concatenate([channel, np.broadcast_to(ranks, (len(scales), len(ranks)))], axis=1)
        macs = np.asarray(space.cost(grid)["macs_ratio"], dtype=float)
        fits = np.flatnonzero((macs <= macs_ratio * (1 + 1e-9)) & (macs >= DECOMPOSE_MIN_FILL * macs_ratio))
        if len(fits):
            genomes.append(grid[fits[np.argmax(macs[fits])]].copy())
    if not genomes:
        return space, []
    evaluator = Evaluator(data.val, n_samples=n_samples, finetune=None, train_data=data.train,
                          n_train_samples=min(5000, len(data.train)), confirm_samples=None, seed=seed, device=device)
    records = evaluator.evaluate(space, np.stack(genomes))
    order = sorted(range(len(genomes)), key=lambda i: (-(records[i].accuracy if records[i].error is None
                                                          else -1.0), i))
    chosen, keys = [], set()
    for i in order:
        if len(chosen) >= n or records[i].error is not None:
            break
        if records[i].plan_key not in keys:
            keys.add(records[i].plan_key)
            chosen.append(("decomposed", genomes[i]))
    _log.info("decomposed draws at %.2f%% MACs: %d measured, best %.2f%% before retraining", 100 * macs_ratio,
              len(genomes), 100 * max((r.accuracy for r in records if r.error is None), default=0.0))
    return space, chosen


def _short_retrain(model, *, data, steps, seed, device, eval_batch_size, fit_options):
    """Validation accuracy of a copy of ``model`` after ``steps`` retraining steps (the test split is not read)."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(int(seed))
    steps_per_epoch = math.ceil(len(data.train) / int(fit_options.get("batch_size", 128)))
    with zeros_kept(model):
        fit(model, data.train, epochs=math.ceil(steps / steps_per_epoch), max_steps=steps, generator=generator,
            progress=False, desc="race", device=device, **fit_options)
    accuracy = evaluate(model, data.val, batch_size=eval_batch_size, device=device)
    model.cpu()
    return accuracy


def successive_halving(space, contenders: Sequence[Tuple[Any, ...]], *, data: Splits, budget_steps: int,
                       seed: int = 0, device: Device = "auto", base_model: Optional[torch.nn.Module] = None,
                       reconstruct: Optional[bool] = None, **fit_options: Any) -> Tuple[int, pd.DataFrame]:
    """Race ``contenders`` by short retrainings until one is left.

    Round ``i`` retrains every remaining contender from its inherited weights for
    ``budget_steps * 2**i / len(contenders)`` steps (so each round costs about one full
    retraining), measures it on the validation split and keeps the better half.

    Args:
        space: The space that rebuilds each genome.
        contenders: ``(source, genome)`` pairs (see :func:`race_contenders`), or
            ``(source, genome, space)`` for a contender of another space (see
            :func:`decomposed_contenders`).
        data: A :class:`moprune.data.Splits`; the test split is not read.
        budget_steps: Optimizer steps of one full retraining.
        seed: Seed of every short retraining.
        device: Where to train.
        base_model: The unpruned model; with ``reconstruct``, each contender's layers are refit
            to its outputs before its first retraining, as :func:`moprune.retrain` does.
        reconstruct: As in :func:`moprune.retrain` (``None``: where ``base_model`` has no BatchNorm).
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
    from moprune.reconstruction import reconstruct_by_default
    from moprune.retraining import _candidate_model

    if base_model is not None:
        reconstruct = reconstruct_by_default(base_model) if reconstruct is None else check_bool("reconstruct", reconstruct)

    models: Dict[int, torch.nn.Module] = {}  # each contender built (and reconstructed) once

    def model_of(i):
        if i not in models:
            own_space = contenders[i][2] if len(contenders[i]) > 2 else space
            models[i] = _candidate_model((own_space, np.asarray(contenders[i][1])),
                                         base_model=base_model if reconstruct else None, train_data=data.train,
                                         seed=seed)
        return models[i]

    alive = list(range(len(contenders)))
    rows: List[Dict[str, Any]] = []
    round_ = 0
    while len(alive) > 1:
        steps = max(1, int(budget_steps * 2 ** round_ / len(contenders)))
        scores = {}
        for i in alive:
            scores[i] = _short_retrain(model_of(i), data=data, steps=steps, seed=seed, device=device,
                                       eval_batch_size=eval_batch_size, fit_options=options)
            rows.append({"contender": i, "source": contenders[i][0], "round": round_, "steps": steps,
                         "val_accuracy": scores[i]})
        ranked = sorted(alive, key=lambda i: (-scores[i], i))  # ties: the earlier contender
        alive = ranked[:max(1, len(alive) // 2)]
        _log.info("race round %d (%d steps): kept %s", round_, steps, alive)
        round_ += 1
    return alive[0], pd.DataFrame(rows, columns=["contender", "source", "round", "steps", "val_accuracy"])


def retrain_within(result: "SearchResult", max_macs: float, *, data: Splits, base_model: torch.nn.Module, race: int = 8,
                   decompose: Optional[int] = None, epochs: int = 1, lr: float = 0.01, seed: int = 0,
                   out_path: Optional[str] = None, device: Device = "auto", **fit_options: Any) -> pd.Series:
    """The model that retrains best within a MACs budget: a race at the budget, then a final against uniform pruning.

    Below a few percent of the MACs the search's accuracy before retraining is near chance on
    some networks, so its most accurate candidate within a budget is often much smaller than the
    budget allows, and retraining recovers little of what it lost in size. This races models of
    the budget's own size (that of the largest uniform model within it, never above it): the search's most
    accurate fully measured candidate within the budget, parameter-tilted allocations, the
    search's most accurate candidates just below the budget and random allocations around uniform
    (:func:`race_contenders`), by successive halving (:func:`successive_halving`). The survivor is
    retrained with the full budget, and so is the largest uniform model within the budget; the
    one with the higher *validation* accuracy is kept, so the model returned is never behind
    uniform pruning of its size on validation. Every model is refit to the base model's outputs
    before it trains where :func:`moprune.retrain` does so (``reconstruct=``, models without BatchNorm).

    ``decompose`` of the contenders (3 of 8 by default) are channel-pruned *and* factorised
    models of the same size (:func:`decomposed_contenders`, document 004's "D + Ps"), the most
    accurate of :data:`DECOMPOSE_DRAWS` drawn. They race among themselves (refit pruned models
    start higher after a few steps, decomposed ones gain more with a full retraining), and
    the two races' winners and the uniform model are retrained in full: about 6 retrainings
    with the defaults (``2 + log2(race)`` with ``decompose=0``). The model kept may then be a
    decomposed one: its ``genome`` belongs to ``attrs["space"]``, a
    :class:`moprune.space.LowRankChannelSpace` (README, "Within a budget", for where they win).

    Args:
        result: A :class:`moprune.SearchResult` that carries its space (any search over it; one
            run with ``search(..., max_macs=...)`` spends its whole budget within it).
        max_macs: The budget, a fraction of the base model's MACs in (0, 1].
        data: A :class:`moprune.data.Splits`; the pick reads validation only, test is reported.
        base_model: The unpruned model (reference for the ratios and the drops).
        race: Contenders raced, at least 2.
        decompose: How many of them are decomposed models, in ``[0, race - 1]`` (``None``:
            ``3 * race // 8``).
        epochs: Retraining epochs of the finalists (the race's rounds cost about one each).
        lr: Initial learning rate of every retraining (cosine decay).
        seed: Seed of every retraining and of the random contenders.
        out_path: Export the kept model there (``.pt``; ``None``: no file).
        device: Where to retrain.
        **fit_options: Other :func:`moprune.retrain` options (``batch_size``, ``augment``, ...).

    Returns:
        One row, with the fields of a :func:`moprune.retrain_front` row: ``accuracy`` /
        ``accuracy_drop`` / ``accuracy_drop_se`` (retrained, full validation split),
        ``test_accuracy`` / ``test_drop``, ``macs_ratio``, ``params_ratio``, ``genome``, ``path``,
        ``source`` (``"uniform"`` or the finalist's: ``"search"``, ``"params_tilt"``,
        ``"search_neighbor"``, ``"random"``, ``"decomposed"``), ``encoding`` (that of the space
        that rebuilds ``genome``: the search's, or ``"channels+rank"``), ``finalist_source``, ``finalist_accuracy``
        (the better race winner's), ``uniform_accuracy``, ``uniform_test_accuracy``, ``uniform_macs_ratio``,
        ``race_contenders`` and ``eval`` (the search candidate raced first; ``None`` when none fits the budget);
        ``attrs["race_rounds"]`` lists every short retraining, ``attrs["finalists"]`` each race
        winner retrained in full, ``attrs["space"]`` is the space that rebuilds ``genome``.

    Raises:
        MopruneValueError: an invalid argument, or a budget below the smallest uniform model.
    """
    from moprune.algorithms.focused import _largest_uniform_macs
    from moprune.exporting import export
    from moprune.operators.pruning import uniform_genome
    from moprune.results import to_frame
    from moprune.retraining import _measure_base, check_retraining_inputs, drop_standard_error, retrain

    check_retraining_inputs(result, data, base_model)
    max_macs = check_real("max_macs", max_macs, low=0, high=1, low_open=True, unit="MACs ratio")
    race = check_int("race", race, low=2)
    decompose = 3 * race // 8 if decompose is None else check_int("decompose", decompose, low=0, high=race - 1)
    epochs = check_int("epochs", epochs, low=1)
    seed = check_seed(seed)
    space = result.space
    twin_genome = uniform_genome(space, _largest_uniform_macs(space, {"macs_ratio": max_macs}))
    size = float(space.cost(twin_genome[None, :])["macs_ratio"][0])
    history = to_frame(result)
    measured = history["error_message"].isna() & ~history["screened"].astype(bool) & (history["macs_ratio"] <= size)
    within = history[measured]
    first = int(within["accuracy"].idxmax()) if len(within) else None
    genome = np.asarray(within.loc[first, "genome"]) if first is not None else twin_genome
    contenders: List[Tuple[Any, ...]] = race_contenders(space, genome, race - decompose, history=history,
                                                         macs_ratio=size, seed=seed, at_most=True)
    macs = np.asarray(space.cost(np.stack([g for _, g in contenders]))["macs_ratio"], dtype=float)
    contenders = [c for c, m in zip(contenders, macs) if m <= max_macs * (1 + 1e-9)] or contenders[:1]
    device = resolve_device(device)
    if decompose:
        lowrank, decomposed = decomposed_contenders(base_model, size, decompose, data=data, seed=seed, device=device)
        contenders += [(source, g, lowrank) for source, g in decomposed]
    options = {k: v for k, v in fit_options.items() if k not in ("max_steps", "keep_zeros")}
    budget = fit_options.get("max_steps") or epochs * math.ceil(len(data.train) / int(fit_options.get("batch_size", 128)))
    base = _measure_base(base_model, data, fit_options.get("eval_batch_size", 250), device)

    def retrain_genome(g, own_space=space):
        return retrain((own_space, g), data=data, base_model=base_model, epochs=epochs, lr=lr, seed=seed, device=device,
                       _base=base, **fit_options)

    # Pruned and decomposed models learn at different paces (a pruned model refit to the base model's
    # outputs starts higher, a decomposed one keeps more channels and gains more per step), so each
    # family races on its own and both winners are retrained in full.
    families = [[i for i, c in enumerate(contenders) if len(c) == 2],
                [i for i, c in enumerate(contenders) if len(c) > 2]]
    rounds_list, finalists = [], []
    for family in (f for f in families if f):
        winner, family_rounds = successive_halving(space, [contenders[i] for i in family], data=data,
                                                   budget_steps=budget, seed=seed, device=device,
                                                   base_model=base_model, lr=lr, **options)
        family_rounds["contender"] = [family[i] for i in family_rounds["contender"]]
        rounds_list.append(family_rounds)
        own_source, own_genome = contenders[family[winner]][:2]
        own_space = contenders[family[winner]][2] if len(contenders[family[winner]]) > 2 else space
        finalists.append((retrain_genome(own_genome, own_space), own_genome, own_source, own_space))
    rounds = pd.concat(rounds_list, ignore_index=True) if len(rounds_list) > 1 else rounds_list[0]
    best = max(range(len(finalists)), key=lambda i: (finalists[i][0].val_accuracy, -i))  # ties: the pruned one
    finalist, finalist_genome, finalist_source, finalist_space = finalists[best]
    same = finalist_space is space and np.array_equal(finalist_genome, twin_genome)
    twin = finalist if same else retrain_genome(twin_genome)
    done, kept, source, kept_space = finalist, finalist_genome, finalist_source, finalist_space
    if twin.val_accuracy > finalist.val_accuracy:
        done, kept, source, kept_space = twin, twin_genome, "uniform", space
    path = None
    if out_path is not None:
        path = os.fspath(out_path)
        export(done.model, path, meta={"val_accuracy": done.val_accuracy, "test_accuracy": done.test_accuracy,
                                       "macs_ratio": done.macs_ratio, "source": source})
    row = pd.Series({
        "eval": first, "accuracy": done.val_accuracy, "error": 1.0 - done.val_accuracy,
        "accuracy_drop": 100.0 * (done.base_val_accuracy - done.val_accuracy),
        "accuracy_drop_se": drop_standard_error(base[4], done.val_correct),
        "test_accuracy": done.test_accuracy, "test_drop": 100.0 * (done.base_test_accuracy - done.test_accuracy),
        "macs": done.macs, "macs_ratio": done.macs_ratio, "params": done.params, "params_ratio": done.params_ratio,
        "epochs": epochs, "genome": kept, "path": path, "source": source, "encoding": kept_space.encoding,
        "finalist_source": finalist_source,
        "finalist_accuracy": finalist.val_accuracy, "finalist_test_accuracy": finalist.test_accuracy,
        "uniform_accuracy": twin.val_accuracy, "uniform_test_accuracy": twin.test_accuracy,
        "uniform_macs_ratio": twin.macs_ratio, "race_contenders": len(contenders),
    })
    row.attrs.update({"race_rounds": rounds.to_dict("records"), "space": kept_space, "base_val_accuracy": base[2],
                      "finalists": [{"source": f[2], "val_accuracy": f[0].val_accuracy,
                                     "test_accuracy": f[0].test_accuracy, "macs_ratio": f[0].macs_ratio}
                                    for f in finalists],
                      "base_test_accuracy": base[3], "max_macs": max_macs})
    _log.info("within %.2f%% MACs: %s kept at %.2f%%, val %.2f%% (uniform %.2f%%), test %.2f%%", 100 * max_macs,
              source, 100 * done.macs_ratio, 100 * done.val_accuracy, 100 * twin.val_accuracy,
              100 * done.test_accuracy)
    return row
