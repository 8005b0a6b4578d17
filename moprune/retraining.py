"""Retrain the picked candidate on the full training split and report its test accuracy.

This is document 000's step 7: the search scored candidates on the validation split after a
short fine-tuning; the chosen one is now trained properly (optionally distilled from the base
model) and only then measured on the test split, which nothing else in moprune reads.
"""

import contextlib
import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from moprune.archive import SearchResult
from moprune.data import Splits
from moprune.devices import Device, resolve_device
from moprune.exceptions import invalid_value
from moprune.logging import get_logger
from moprune.reconstruction import reconstruct_by_default, reconstructed, supports_reconstruction
from moprune.train import correct_predictions, evaluate, fit, zeros_kept
from moprune.validation import check_bool, check_int, check_real, check_seed, conflict

__all__ = ["RetrainResult", "count_macs_params", "drop_standard_error", "front_points", "retrain", "retrain_front"]

_log = get_logger("retrain")


@dataclass
class RetrainResult:
    """What :func:`retrain` returns.

    Attributes:
        model: The retrained pruned model (eval mode).
        test_accuracy, val_accuracy: Its accuracies after retraining, in [0, 1].
        base_test_accuracy, base_val_accuracy: The base model's (``nan`` without ``base_model``).
        macs, params: Counts of the pruned model without the multiplications by zero weights and
            without the zero weights (see :func:`count_macs_params`); thop's for channel pruning.
        dense_macs, dense_params: thop's counts of the pruned model (zero weights included).
        base_macs, base_params: thop's counts of the base model (``nan`` without ``base_model``),
            the denominators the spaces use for their ratios.
        macs_ratio, params_ratio: Pruned / base (``nan`` without ``base_model``).
        train_loss: Mean training loss of the last epoch.
        epochs, lr, distill_weight, seed: The settings used.
        val_correct: Whether it classifies each validation image right (a bool tensor), from
            which :func:`retrain_front` derives the standard error of its drop from the base.
    """

    model: nn.Module = field(repr=False)
    test_accuracy: float
    val_accuracy: float
    base_test_accuracy: float
    base_val_accuracy: float
    macs: float
    params: float
    dense_macs: float
    dense_params: float
    base_macs: float
    base_params: float
    macs_ratio: float
    params_ratio: float
    train_loss: float
    epochs: int
    lr: float
    distill_weight: float
    seed: int
    val_correct: Optional[torch.Tensor] = field(default=None, repr=False)


def count_macs_params(model, input_shape):
    """MACs and parameters of ``model`` for one input of ``input_shape`` (the model is untouched).

    Multiplications by a weight that is exactly zero, and such weights, are not counted, as in
    :class:`moprune.space.WeightSpace`'s costs; for a channel-pruned model (no zero weights)
    these are thop's counts.

    Returns:
        ``(macs, params, dense_macs, dense_params)``, the last two being thop's counts.
    """
    import thop

    probe = copy.deepcopy(model).eval()
    zero_macs, zero_weights, handles = [0], [0], []

    def hook(module, inputs, output):
        zeros = int((module.weight == 0).sum())
        uses = output[0, 0].numel() if isinstance(module, nn.modules.conv._ConvNd) \
            else output.numel() // module.out_features
        zero_macs[0] += zeros * uses
        zero_weights[0] += zeros

    for module in probe.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        probe(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        macs, params = thop.profile(probe, inputs=(torch.zeros(1, *input_shape),), verbose=False)
    return float(macs) - zero_macs[0], float(params) - zero_weights[0], float(macs), float(params)


def _measure_base(base_model, data, eval_batch_size, device="auto"):
    """thop MACs and params, validation and test accuracy of the base model (measured on ``device``),
    and whether it classifies each validation image right."""
    input_shape = tuple(data.train.tensors[0].shape[1:])
    _, _, base_macs, base_params = count_macs_params(copy.deepcopy(base_model).cpu(), input_shape)
    reference = copy.deepcopy(base_model)
    val_correct = correct_predictions(reference, data.val, batch_size=eval_batch_size, device=device)
    return (base_macs, base_params, int(val_correct.sum()) / len(data.val),
            evaluate(reference, data.test, batch_size=eval_batch_size, device=device), val_correct)


def drop_standard_error(base_correct: torch.Tensor, correct: torch.Tensor) -> float:
    """Standard error, in accuracy points, of a model's accuracy drop from the base on the same images.

    The drop is the mean of the per-image differences (base right minus model right, each -1, 0
    or 1), so its standard error comes from the images the two models disagree on: a paired
    estimate, much smaller than two independent binomial errors would suggest.
    """
    if base_correct.shape != correct.shape:
        raise invalid_value("correct", f"one entry per image, like base_correct {tuple(base_correct.shape)}",
                            tuple(correct.shape))
    n = len(correct)
    if n < 2:
        return math.nan
    diff = base_correct.double() - correct.double()
    return 100.0 * float(diff.std(unbiased=True)) / math.sqrt(n)


def _candidate_model(candidate, *, base_model=None, train_data=None, seed=0):
    """The model to retrain; with ``base_model`` and ``train_data``, reconstructed where the space allows."""
    if isinstance(candidate, nn.Module):
        return copy.deepcopy(candidate)
    if isinstance(candidate, tuple) and len(candidate) == 2 and hasattr(candidate[0], "materialize"):
        space, genome = candidate
        if isinstance(genome, pd.Series):
            if "genome" not in genome.index:
                raise invalid_value("candidate", "(space, genome) where a row must have a 'genome' entry",
                                    list(genome.index))
            genome = genome["genome"]  # a row picked from a results frame
        if base_model is not None and train_data is not None and supports_reconstruction(space):
            return reconstructed(space, np.asarray(genome), base_model, train_data, seed=seed)
        model = space.materialize(np.asarray(genome))
        if not isinstance(model, nn.Module):
            raise invalid_value("candidate", "a space whose materialize returns an nn.Module",
                                type(model).__name__)
        return model
    raise invalid_value("candidate", "an nn.Module or a (space, genome) pair (the genome may be a row "
                        "from moprune.results.pick)", type(candidate).__name__)


def retrain(candidate: Union[nn.Module, Tuple[Any, Any]], *, data: Splits, base_model: Optional[nn.Module] = None,
            distill_weight: float = 0.0, temperature: float = 4.0, epochs: int = 10, lr: float = 0.05,
            max_steps: Optional[int] = None, batch_size: int = 128, optimizer: str = "sgd", momentum: float = 0.9,
            weight_decay: float = 5e-4, schedule: str = "cosine", seed: int = 0, keep_zeros: bool = True,
            eval_batch_size: int = 250, progress: bool = False, device: Device = "auto", augment: Optional[str] = None,
            reconstruct: Optional[bool] = None, _base: Optional[Tuple[float, float, float, float]] = None) -> "RetrainResult":
    """Train a pruned candidate on ``data.train``, then report validation and test accuracy.

    Training continues from the candidate's inherited weights. The test split is read only here.
    The result's MACs/params use the same definitions as the spaces' costs, so its ``macs_ratio``
    matches the search's for channel and weight pruning alike.

    Args:
        candidate: A pruned ``nn.Module`` (copied, never modified) or a ``(space, genome)`` pair,
            rebuilt with ``space.materialize(genome)``; the genome may be a row picked from a
            results frame (its ``"genome"`` entry is used).
        data: A :class:`moprune.data.Splits` (train, val, test).
        base_model: The unpruned model: the teacher for distillation and the reference for the
            MACs/params ratios and base accuracies (not modified).
        distill_weight: Weight in [0, 1] of the distillation loss (needs ``base_model``).
        temperature: Distillation temperature.
        epochs, lr, max_steps, batch_size, optimizer, momentum, weight_decay, schedule: Passed to
            :func:`moprune.train.fit` (``max_steps``: stop after that many optimizer steps, the
            learning-rate schedule spanning them; ``None``: all epochs).
        seed: Seeds the ``torch.Generator`` that shuffles the batches (no global seeding).
        keep_zeros: Weights of Conv/Linear layers that are exactly zero before retraining stay
            zero (masked during training), so unstructured pruning keeps its sparsity; a
            channel-pruned model has no such weights.
        eval_batch_size: Batch size of the evaluations.
        progress: Show a progress bar.
        device: Where to train and evaluate (see :func:`moprune.devices.resolve_device`); the
            result's model is handed back on the CPU.
        augment: Augment the training batches (``None``, ``"crop"``, ``"flip"``, ``"flip+crop"``;
            see :func:`moprune.data.augment.augment_batch`).
        reconstruct: Before training, refit the layers of a ``(space, genome)`` candidate to
            ``base_model``'s outputs on training images (:func:`moprune.reconstruction.reconstruct`;
            channel, low-rank and channel + low-rank spaces; ignored without ``base_model``, for
            an ``nn.Module`` candidate and for weight masks). ``None``: refit where the base model
            has no BatchNorm (:func:`moprune.reconstruction.reconstruct_by_default`). ``False``:
            train the inherited weights as they are.
        _base: Internal: the base model's measurements from ``_measure_base`` (so that
            :func:`retrain_front` measures the base once for all its points).

    Returns:
        A :class:`RetrainResult`.

    Raises:
        MopruneValueError: an invalid argument.
    """
    if not isinstance(data, Splits):
        raise invalid_value("data", "a moprune Splits (train, val, test)", type(data).__name__)
    if base_model is not None and not isinstance(base_model, nn.Module):
        raise invalid_value("base_model", "an nn.Module or None", type(base_model).__name__)
    distill_weight = check_real("distill_weight", distill_weight, low=0, high=1)
    if distill_weight > 0 and base_model is None:
        raise conflict(("base_model",), "the teacher model (distill_weight > 0 needs base_model)", None)
    seed = check_seed(seed)
    keep_zeros = check_bool("keep_zeros", keep_zeros)
    reconstruct = reconstruct_by_default(base_model) if reconstruct is None else check_bool("reconstruct", reconstruct)
    device = resolve_device(device)
    model = _candidate_model(candidate, base_model=base_model if reconstruct else None, train_data=data.train,
                             seed=seed)
    generator = torch.Generator().manual_seed(int(seed))
    teacher = None
    if base_model is not None and distill_weight > 0:
        teacher = copy.deepcopy(base_model).eval()
    with zeros_kept(model) if keep_zeros else contextlib.nullcontext():
        train_loss = fit(model, data.train, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
                         optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
                         teacher=teacher,
                         distill_weight=float(distill_weight), temperature=temperature, generator=generator,
                         progress=progress, desc="retrain", device=device, augment=augment)
    test_accuracy = evaluate(model, data.test, batch_size=eval_batch_size, device=device)
    val_correct = correct_predictions(model, data.val, batch_size=eval_batch_size, device=device)
    val_accuracy = int(val_correct.sum()) / len(data.val)
    model.cpu()
    input_shape = tuple(data.train.tensors[0].shape[1:])
    macs, params, dense_macs, dense_params = count_macs_params(model, input_shape)
    nan = math.nan
    if base_model is None:
        base_macs = base_params = base_val = base_test = nan
    else:
        base_macs, base_params, base_val, base_test = (_base or _measure_base(base_model, data, eval_batch_size,
                                                                              device))[:4]
    return RetrainResult(
        model=model,
        test_accuracy=test_accuracy,
        val_accuracy=val_accuracy,
        base_test_accuracy=base_test,
        base_val_accuracy=base_val,
        macs=macs,
        params=params,
        dense_macs=dense_macs,
        dense_params=dense_params,
        base_macs=base_macs,
        base_params=base_params,
        macs_ratio=macs / base_macs if base_model is not None else nan,
        params_ratio=params / base_params if base_model is not None else nan,
        train_loss=float(train_loss),
        epochs=epochs,
        lr=lr,
        distill_weight=float(distill_weight),
        seed=int(seed),
        val_correct=val_correct,
    )


def front_points(front, n_points):
    """Up to ``n_points`` rows of ``front`` spread evenly along the MACs axis on a log scale.

    The targets are ``n_points`` MACs ratios evenly spaced in ``log(macs_ratio)`` between the
    front's smallest and largest model; each takes the nearest row not taken yet (so the smallest
    and largest models are always among them).

    Returns:
        The chosen rows of ``front``, sorted by MACs ratio.
    """
    n_points = check_int("n_points", n_points, low=1)
    if len(front) <= n_points:
        return front.sort_values("macs_ratio")
    log_macs = np.log(np.maximum(front["macs_ratio"].to_numpy(dtype=float), 1e-12))
    chosen = []
    for target in np.linspace(log_macs.min(), log_macs.max(), n_points):
        distance = np.abs(log_macs - target)
        distance[chosen] = np.inf
        chosen.append(int(np.argmin(distance)))
    return front.iloc[sorted(set(chosen))].sort_values("macs_ratio")


def check_retraining_inputs(result: SearchResult, data: Splits, base_model: nn.Module) -> None:
    """Refuse, naming the argument, a result without its space, data that are not Splits or a base that is no module."""
    if not isinstance(result, SearchResult) or result.space is None:
        raise invalid_value("result", "a moprune SearchResult that carries its space", type(result).__name__)
    if not isinstance(data, Splits):
        raise invalid_value("data", "a moprune Splits (train, val, test)", type(data).__name__)
    if not isinstance(base_model, nn.Module):
        raise invalid_value("base_model", "the unpruned nn.Module", type(base_model).__name__)


def retrain_front(result: SearchResult, *, data: Splits, base_model: Optional[nn.Module], n_points: int = 8,
                  epochs: int = 1, lr: float = 0.01, distill_weight: float = 0.0, max_drop: Optional[float] = None,
                  max_macs: Optional[float] = None, min_macs: Optional[float] = None,
                  uniform_twins: bool = False, race: int = 0, out_dir: Optional[Union[str, os.PathLike]] = None, seed: int = 0,
                  progress: bool = False, device: Device = "auto", **fit_options: Any) -> pd.DataFrame:
    """Retrain points of a search's Pareto front and return the front users get after retraining.

    The front is measured during search on a validation subset, before any retraining; what a
    user ends with is each model after retraining. This retrains up to ``n_points`` front
    candidates spread along the MACs axis (see :func:`front_points`), each with the same budget,
    and measures them on the full validation split and the test split.

    The returned frame works with :func:`moprune.pick`: its ``accuracy``, ``error`` and
    ``accuracy_drop`` are the retrained *validation* numbers (picking never reads the test split),
    so ``pick(frame, "max_drop", max_drop=0.3)`` is the smallest model within 0.3 points of the
    base after retraining. Test accuracy is reported beside them, for the final report only.

    Args:
        result: A :class:`moprune.SearchResult` (it carries the space that rebuilds each genome).
        data: A :class:`moprune.data.Splits`.
        base_model: The unpruned model: teacher for distillation and reference for the ratios.
        n_points: How many front points to retrain.
        epochs: Retraining epochs of each point.
        lr: Initial learning rate (cosine decay). The default 0.01 suits an epoch or two of
            training from inherited weights (on ``mnist_cnn``, 0.05 lost up to a point of test
            accuracy after one epoch; 10 epochs from scratch-like weights want :func:`retrain`'s 0.05).
        distill_weight: Weight of distillation from ``base_model`` in [0, 1].
        max_drop: Only front points within this many accuracy points of the base at search time
            (zooms on the region users pick from; ``None``: the whole front).
        max_macs: Only front points with at most this MACs ratio (``None``: all).
        min_macs: Only front points with at least this MACs ratio (``None``: all). With
            ``max_macs``, a MACs window: where the search-time accuracy of small models is near
            chance (no fine-tuning in the loop), ``max_drop`` would leave only large models, and
            a window retrains the small ones users want (retraining recovers their accuracy).
        uniform_twins: Also retrain, beside each chosen point, its uniform twin (the same keep
            ratio in every group, most important units first, at the nearest MACs: what plain
            Torch-Pruning gives) with the same budget, and keep whichever has the higher retrained
            *validation* accuracy. Twice
            the retraining; the row is then never worse than uniform pruning on validation. Where
            the search's proxy misranks (``resnet8`` on Fashion-MNIST under 15% of the MACs), this
            is what keeps the delivered models at least as good as the trivial baseline.
        race: With ``race >= 2``, a retraining race per point (see :mod:`moprune.race`): ``race``
            contenders of about its MACs (the point, parameter-tilted allocations, the search's most
            accurate other candidates just below its MACs, random allocations around uniform) are retrained briefly and
            halved until one is left (each round costs about one retraining), and the survivor
            meets the uniform twin at the full budget; the better on validation is kept (implies
            ``uniform_twins``). About ``2 + log2(race)`` retrainings per point. ``0``: no race.
        out_dir: Export every retrained model there as ``front_<eval>.pt`` (``None``: no files);
            with ``uniform_twins``, the kept one of the two.
        seed: Seed of every retraining.
        progress: Show a progress bar per retraining.
        device: Where to retrain and evaluate (see :func:`retrain`).
        **fit_options: Other :func:`retrain` options (``lr``, ``batch_size``, ``optimizer``, ...).

    Returns:
        A DataFrame, one row per retrained point (sorted by MACs), indexed by the candidate's
        ``eval`` index, with ``search_accuracy`` (validation subset, during search),
        ``accuracy`` / ``error`` / ``accuracy_drop`` (retrained, full validation split),
        ``accuracy_drop_se`` (the drop's standard error, paired on the same images: see
        :func:`drop_standard_error`; ``pick(..., margin_se=...)`` reads it),
        ``test_accuracy`` and ``test_drop`` (retrained, test split), ``macs``, ``macs_ratio``,
        ``params``, ``params_ratio``, ``genome``, ``path``; with ``uniform_twins`` also ``source``
        (``"search"`` or ``"uniform"``: which of the two the row's model is), ``search_model_accuracy``
        and ``search_model_test_accuracy`` (the front point's own retrained numbers) and
        ``uniform_accuracy``, ``uniform_test_accuracy``, ``uniform_macs_ratio`` (its twin's); with
        ``race`` the search side's finalist is the race's winner, ``source`` may also be
        ``"params_tilt"``, ``"search_neighbor"`` or ``"random"`` (see :func:`moprune.race.race_contenders`), and
        ``race_contenders`` counts them, ``finalist_source`` says where the winner came from;
        ``attrs["race_rounds"]`` lists every short retraining;
        ``attrs`` hold ``base_val_accuracy``, ``base_test_accuracy`` and ``objectives`` (error, macs).

    Raises:
        MopruneValueError: an invalid argument, or no front point left after the filters.
    """
    from moprune.exporting import export
    from moprune.results import pareto_front

    check_retraining_inputs(result, data, base_model)
    max_drop = check_real("max_drop", max_drop, low=0, allow_none=True, unit="accuracy points")
    max_macs = check_real("max_macs", max_macs, low=0, high=1, low_open=True, allow_none=True, unit="MACs ratio")
    min_macs = check_real("min_macs", min_macs, low=0, high=1, low_open=True, allow_none=True, unit="MACs ratio")
    if min_macs is not None and max_macs is not None and min_macs > max_macs:
        raise invalid_value("min_macs", f"a MACs ratio at most max_macs={max_macs}", min_macs)
    uniform_twins = check_bool("uniform_twins", uniform_twins)
    race = check_int("race", race, low=0)
    if race == 1:
        raise invalid_value("race", "0 (no race) or at least 2 contenders", race)
    uniform_twins = uniform_twins or race >= 2
    front = pareto_front(result)
    if max_drop is not None:
        front = front[front["accuracy_drop"] <= max_drop + 1e-9]
    if max_macs is not None:
        front = front[front["macs_ratio"] <= max_macs + 1e-12]
    if min_macs is not None:
        front = front[front["macs_ratio"] >= min_macs - 1e-12]
    if len(front) == 0:
        raise invalid_value("max_drop, max_macs, min_macs", "filters that leave at least one front point",
                            (max_drop, max_macs, min_macs))
    chosen = front_points(front, n_points)
    device = resolve_device(device)
    base = _measure_base(base_model, data, fit_options.get("eval_batch_size", 250), device)

    def retrain_genome(genome):  # every model gets the same budget
        return retrain((result.space, genome), data=data, base_model=base_model, epochs=epochs, lr=lr,
                       distill_weight=distill_weight, seed=seed, progress=progress, device=device, _base=base,
                       **fit_options)

    history = None
    if race:
        from moprune.results import to_frame

        history = to_frame(result)
    race_rounds = []
    rows = []
    for index, row in chosen.iterrows():
        genome = np.asarray(row["genome"])
        source, extra = "search", {}
        if uniform_twins:
            from moprune.operators.pruning import uniform_genome

            twin_genome = uniform_genome(result.space, float(row["macs_ratio"]))
        if race:
            from moprune.race import race_contenders, successive_halving

            twin_macs = float(result.space.cost(twin_genome[None, :])["macs_ratio"][0])
            contenders = race_contenders(result.space, genome, race, history=history, seed=seed + int(index),
                                         macs_ratio=min(float(row["macs_ratio"]), twin_macs))
            options = {k: v for k, v in fit_options.items() if k not in ("max_steps", "keep_zeros")}
            steps_per_epoch = math.ceil(len(data.train) / int(fit_options.get("batch_size", 128)))
            budget = fit_options.get("max_steps") or epochs * steps_per_epoch
            winner, rounds = successive_halving(result.space, contenders, data=data, budget_steps=budget, seed=seed,
                                                device=device, base_model=base_model, lr=lr, **options)
            race_rounds.extend({"eval": index, **r} for r in rounds.to_dict("records"))
            source, genome = contenders[winner]
            extra.update(race_contenders=len(contenders), finalist_source=source)
        done = retrain_genome(genome)
        if uniform_twins:
            twin = done if np.array_equal(twin_genome, genome) else retrain_genome(twin_genome)
            extra = {**extra, "source": source, "search_model_accuracy": done.val_accuracy,
                     "search_model_test_accuracy": done.test_accuracy, "uniform_accuracy": twin.val_accuracy,
                     "uniform_test_accuracy": twin.test_accuracy, "uniform_macs_ratio": twin.macs_ratio}
            if twin.val_accuracy > done.val_accuracy:
                done, genome, extra["source"] = twin, twin_genome, "uniform"
        path = None
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, f"front_{index}.pt")
            export(done.model, path, meta={"eval": int(index), "val_accuracy": done.val_accuracy,
                                           "test_accuracy": done.test_accuracy, "macs_ratio": done.macs_ratio,
                                           **({"source": extra["source"]} if extra else {})})
        rows.append({
            "eval": index,
            "search_accuracy": float(row["accuracy"]),
            "search_accuracy_drop": float(row["accuracy_drop"]),
            "accuracy": done.val_accuracy,
            "error": 1.0 - done.val_accuracy,
            "accuracy_drop": 100.0 * (done.base_val_accuracy - done.val_accuracy),
            "accuracy_drop_se": drop_standard_error(base[4], done.val_correct),
            "test_accuracy": done.test_accuracy,
            "test_drop": 100.0 * (done.base_test_accuracy - done.test_accuracy),
            "macs": done.macs,
            "macs_ratio": done.macs_ratio,
            "params": done.params,
            "params_ratio": done.params_ratio,
            "epochs": epochs,
            "genome": genome,
            "path": path,
            **extra,
        })
        _log.info("retrained eval %s: %.2f%% MACs, val %.2f%%, test %.2f%%%s", index, 100 * done.macs_ratio,
                  100 * done.val_accuracy, 100 * done.test_accuracy,
                  f" ({extra['source']} kept)" if extra else "")
    frame = pd.DataFrame(rows).set_index("eval")
    frame.attrs.update({"base_val_accuracy": base[2], "base_test_accuracy": base[3],
                        "objectives": ["error", "macs"], "algorithm": result.algorithm, "seed": result.seed})
    if race:
        frame.attrs["race_rounds"] = race_rounds
    return frame
