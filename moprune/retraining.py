"""Retrain the picked candidate on the full training split and report its test accuracy.

This is document 000's step 7: the search scored candidates on the validation split after a
short fine-tuning; the chosen one is now trained properly (optionally distilled from the base
model) and only then measured on the test split, which nothing else in moprune reads.
"""

import contextlib
import copy
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from moprune.data import Splits
from moprune.exceptions import invalid_value
from moprune.train import evaluate, fit, zeros_kept
from moprune.validation import check_bool, check_real, check_seed, conflict

__all__ = ["RetrainResult", "count_macs_params", "retrain"]


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


def _candidate_model(candidate):
    if isinstance(candidate, nn.Module):
        return copy.deepcopy(candidate)
    if isinstance(candidate, tuple) and len(candidate) == 2 and hasattr(candidate[0], "materialize"):
        space, genome = candidate
        if isinstance(genome, pd.Series):
            if "genome" not in genome.index:
                raise invalid_value("candidate", "(space, genome) where a row must have a 'genome' entry",
                                    list(genome.index))
            genome = genome["genome"]  # a row picked from a results frame
        model = space.materialize(np.asarray(genome))
        if not isinstance(model, nn.Module):
            raise invalid_value("candidate", "a space whose materialize returns an nn.Module",
                                type(model).__name__)
        return model
    raise invalid_value("candidate", "an nn.Module or a (space, genome) pair (the genome may be a row "
                        "from moprune.results.pick)", type(candidate).__name__)


def retrain(candidate, *, data, base_model=None, distill_weight=0.0, temperature=4.0, epochs=10,
            lr=0.05, batch_size=128, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
            schedule="cosine", seed=0, keep_zeros=True, eval_batch_size=250, progress=False):
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
        epochs, lr, batch_size, optimizer, momentum, weight_decay, schedule: Passed to
            :func:`moprune.train.fit`.
        seed: Seeds the ``torch.Generator`` that shuffles the batches (no global seeding).
        keep_zeros: Weights of Conv/Linear layers that are exactly zero before retraining stay
            zero (masked during training), so unstructured pruning keeps its sparsity; a
            channel-pruned model has no such weights.
        eval_batch_size: Batch size of the evaluations.
        progress: Show a progress bar.

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
    model = _candidate_model(candidate)
    generator = torch.Generator().manual_seed(int(seed))
    teacher = None
    if base_model is not None and distill_weight > 0:
        teacher = copy.deepcopy(base_model).eval()
    with zeros_kept(model) if keep_zeros else contextlib.nullcontext():
        train_loss = fit(model, data.train, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                         momentum=momentum, weight_decay=weight_decay, schedule=schedule, teacher=teacher,
                         distill_weight=float(distill_weight), temperature=temperature, generator=generator,
                         progress=progress, desc="retrain")
    input_shape = tuple(data.train.tensors[0].shape[1:])
    macs, params, dense_macs, dense_params = count_macs_params(model, input_shape)
    nan = math.nan
    base_macs = base_params = base_val = base_test = nan
    if base_model is not None:
        _, _, base_macs, base_params = count_macs_params(base_model, input_shape)
        reference = copy.deepcopy(base_model)
        base_val = evaluate(reference, data.val, batch_size=eval_batch_size)
        base_test = evaluate(reference, data.test, batch_size=eval_batch_size)
    return RetrainResult(
        model=model,
        test_accuracy=evaluate(model, data.test, batch_size=eval_batch_size),
        val_accuracy=evaluate(model, data.val, batch_size=eval_batch_size),
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
    )
