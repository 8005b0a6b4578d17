"""Training, fine-tuning and evaluation loops (CPU-friendly, deterministic under a generator)."""

import contextlib
import math
from typing import Iterator, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from moprune.devices import Device, resolve_device
from moprune.exceptions import TrainingDivergedError
from moprune.validation import check_choice, check_int, check_real

_OPTIMIZERS = ("sgd", "adam")


def batches(dataset: TensorDataset, batch_size: int, *, shuffle: bool = False,
            generator: Optional[torch.Generator] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(inputs, labels)`` mini-batches of a ``TensorDataset`` without a DataLoader.

    Indexing the tensors directly is several times cheaper than a DataLoader on CPU.
    """
    images, labels = dataset.tensors[:2]
    n = len(images)
    order = torch.randperm(n, generator=generator) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            yield images[start:start + batch_size], labels[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield images[index], labels[index]


@torch.no_grad()
def correct_predictions(model: nn.Module, dataset: TensorDataset, *, batch_size: int = 250,
                        device: Device = "auto") -> torch.Tensor:
    """Whether ``model`` classifies each image of ``dataset`` right: a bool tensor, one per image.

    The model is moved to ``device`` (see :func:`moprune.devices.resolve_device`), put in eval
    mode and left there; batches are moved to it one at a time.
    """
    check_int("batch_size", batch_size, low=1)
    device = resolve_device(device)
    model.to(device).eval()
    right = [(model(x.to(device)).argmax(1) == y.to(device)).cpu() for x, y in batches(dataset, batch_size)]
    return torch.cat(right) if right else torch.zeros(0, dtype=torch.bool)


def evaluate(model: nn.Module, dataset: TensorDataset, *, batch_size: int = 250, device: Device = "auto") -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` as a fraction in [0, 1].

    The model is moved to ``device`` (see :func:`moprune.devices.resolve_device`), put in eval
    mode and left there; batches are moved to it one at a time.
    """
    right = correct_predictions(model, dataset, batch_size=batch_size, device=device)
    return int(right.sum()) / len(dataset)


def _make_optimizer(model, optimizer, lr, momentum, weight_decay):
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                               weight_decay=weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


DIVERGENCE_FACTOR = 100.0
"""Training stops with :class:`~moprune.exceptions.TrainingDivergedError` when a batch's loss is
not finite or exceeds this multiple of the first batch's (at least 1)."""


CPU_CHANNELS_LAST = True
"""On the CPU, :func:`fit` trains in channels-last memory format (convolutions run faster:
``benchmarks/bench_channels_last.py``) and hands the model back in the format it came in."""


def _is_channels_last(model):
    weights = [p for p in model.parameters() if p.dim() == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def fit(model: nn.Module, dataset: TensorDataset, *, epochs: int = 1, max_steps: Optional[int] = None,
        lr: float = 0.05, batch_size: int = 128, optimizer: str = "sgd", momentum: float = 0.9,
        weight_decay: float = 5e-4, schedule: str = "cosine", teacher: Optional[nn.Module] = None,
        distill_weight: float = 0.0, temperature: float = 4.0, generator: Optional[torch.Generator] = None,
        progress: bool = True, desc: str = "train", augment: Optional[str] = None, device: Device = "auto") -> float:
    """Train ``model`` in place with cross-entropy (optionally distilled from ``teacher``).

    Args:
        model: The network to train; it is left in eval mode.
        dataset: Training ``TensorDataset``.
        epochs: Passes over ``dataset``.
        max_steps: Stop after this many optimizer steps (``None``: run all epochs).
        lr: Peak learning rate.
        batch_size: Mini-batch size.
        optimizer: ``"sgd"`` (Nesterov momentum) or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        schedule: ``"cosine"`` (decay to zero over the run) or ``"constant"``.
        teacher: Optional model for knowledge distillation.
        distill_weight: Weight in [0, 1] of the distillation loss (KL at ``temperature``).
        temperature: Softmax temperature for distillation.
        generator: ``torch.Generator`` for the shuffling; same generator state, same result.
        progress: Show a tqdm bar (it switches itself off when stderr is not a terminal).
        desc: Label of the progress bar.
        augment: ``None``, ``"flip"``, ``"flip+crop"`` or ``"crop"``: augment every training batch with
            :func:`moprune.data.augment.augment_batch`, drawing from ``generator``.
        device: Where to train (see :func:`moprune.devices.resolve_device`); ``model`` (and
            ``teacher``) are moved there and left there, batches are moved one at a time.

    Returns:
        The mean training loss of the last epoch.

    Raises:
        TrainingDivergedError: The loss became non-finite or exploded (see :data:`DIVERGENCE_FACTOR`).
    """
    check_int("epochs", epochs, low=1)
    check_int("batch_size", batch_size, low=1)
    check_real("lr", lr, low=0, low_open=True)
    check_int("max_steps", max_steps, low=1, allow_none=True)
    check_choice("schedule", schedule, ("cosine", "constant"))
    check_real("distill_weight", distill_weight, low=0, high=1)
    check_choice("optimizer", optimizer, _OPTIMIZERS)
    if augment is not None:
        from moprune.data.augment import AUGMENTATIONS, augment_batch

        check_choice("augment", augment, AUGMENTATIONS)
    device = resolve_device(device)
    model.to(device)
    converted = CPU_CHANNELS_LAST and device.type == "cpu" and not _is_channels_last(model)
    if converted:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay)
    sched = None
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    if teacher is not None:
        teacher.to(device).eval()
    criterion = nn.CrossEntropyLoss()
    step, last_loss, first_loss = 0, float("nan"), None
    bar = tqdm(total=total, desc=desc, disable=None if progress else True, leave=False)
    try:
        for _ in range(epochs):
            model.train()
            running, seen = 0.0, 0
            for x, y in batches(dataset, batch_size, shuffle=True, generator=generator):
                if augment is not None:
                    x = augment_batch(x, augment, generator=generator)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x)
                loss = criterion(logits, y)
                if teacher is not None and distill_weight > 0:
                    with torch.no_grad():
                        soft = torch.softmax(teacher(x) / temperature, dim=1)
                    kd = nn.functional.kl_div(torch.log_softmax(logits / temperature, dim=1), soft,
                                              reduction="batchmean") * temperature ** 2
                    loss = (1 - distill_weight) * loss + distill_weight * kd
                value = float(loss.detach())
                first_loss = value if first_loss is None else first_loss
                if not math.isfinite(value) or value > DIVERGENCE_FACTOR * max(first_loss, 1.0):
                    raise TrainingDivergedError(
                        f"training diverged at step {step + 1} of {total}: loss {value:.4g} (first batch "
                        f"{first_loss:.4g}); lower lr (it is {lr})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                running += value * len(y)
                seen += len(y)
                step += 1
                bar.update(1)
                if step >= total:
                    break
            last_loss = running / max(seen, 1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if step >= total:
                break
    finally:
        bar.close()
        if converted:
            model.to(memory_format=torch.contiguous_format)  # handed back in the format it came in
    model.eval()
    return last_loss


def finetune(model: nn.Module, dataset: TensorDataset, *, steps: int = 100, lr: float = 0.01, batch_size: int = 128,
             optimizer: str = "sgd", generator: Optional[torch.Generator] = None, progress: bool = False,
             device: Device = "auto") -> float:
    """A short constant-rate fine-tuning (document 000's fitness step): ``steps`` SGD steps.

    ``device``: where to fine-tune (as for :func:`fit`).

    Returns:
        The mean training loss over the steps taken.
    """
    check_int("steps", steps, low=1)
    epochs = math.ceil(steps * batch_size / len(dataset))
    return fit(model, dataset, epochs=epochs, max_steps=steps, lr=lr, batch_size=batch_size,
               optimizer=optimizer, weight_decay=0.0, schedule="constant", generator=generator,
               progress=progress, desc="finetune", device=device)


@contextlib.contextmanager
def zeros_kept(model):
    """Within the context, training keeps the exactly-zero weights of Conv/Linear layers at zero.

    This is how an unstructured (masked) model is fine-tuned without its pruned weights growing
    back. It uses ``torch.nn.utils.prune.custom_from_mask``; on exit the masks are folded back
    into plain ``weight`` parameters. Build the optimizer inside the context (``fit`` and
    ``finetune`` do).

    Example:
        >>> with zeros_kept(masked_model):
        ...     finetune(masked_model, train_data, steps=100)
    """
    import torch.nn.utils.prune as torch_prune

    masked = []
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and bool((module.weight == 0).any()):
            torch_prune.custom_from_mask(module, "weight", module.weight.detach() != 0)
            masked.append(module)
    try:
        yield model
    finally:
        for module in masked:
            torch_prune.remove(module, "weight")
