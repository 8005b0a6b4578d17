"""Least-squares reconstruction: refit a pruned model's layers to the base model's outputs.

A channel-pruned or decomposed model inherits its weights from the base model, but every layer
after the first now sees fewer (or approximated) inputs, so its outputs drift from the base
model's and short retraining starts far from where it could. Layer by layer, in the order the
model runs them, :func:`reconstruct` solves a ridge least-squares problem for the weights of each
layer's last linear operation (the layer itself, or the last factor of a decomposed layer): given
what the pruned model now feeds it, reproduce the base layer's output on the channels it kept.
This is the reconstruction step of channel-pruning methods such as ThiNet (Luo et al., 2017) and
He et al. (2017), without their channel selection (the space already chose the channels).

On ``mnist_cnn`` at 4.2% of the MACs it raises the accuracy before retraining from 80% to 98.9%
(uniform pruning) and the accuracy after one epoch of retraining by about 0.4 points (the
session-26 log of ``docs/search_quality.md``).

Only :class:`torch.nn.Linear` and ungrouped :class:`torch.nn.Conv2d` layers that run once per
forward pass are refit; BatchNorm layers keep their statistics (the refit convolution feeds them
what the base model fed them). Unstructured weight masks would be filled in by the solve, so
:class:`moprune.space.WeightSpace` genomes are not supported.
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moprune.exceptions import invalid_value
from moprune.logging import get_logger
from moprune.validation import check_int, check_real, check_seed

_log = get_logger(__name__)

__all__ = ["kept_outputs", "reconstruct", "reconstruct_by_default", "reconstructed", "supports_reconstruction"]

RECONSTRUCT_SAMPLES = 2048
"""Training images the least-squares problems are set up on."""

MAX_ROWS = 131_072
"""Rows (image positions) of each layer's least-squares problem; convolutions sample positions to stay under it."""


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted tensor is captured."""


def _last_op(module: nn.Module) -> nn.Module:
    return module[-1] if isinstance(module, nn.Sequential) and len(module) else module


def _fittable(module: nn.Module) -> bool:
    if type(module) is nn.Linear:
        return True
    return (type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))  # "same"/"valid" padding: F.unfold wants numbers


def _call_order(model: nn.Module, example: torch.Tensor) -> List[str]:
    """Names of the fittable layers in the order ``model`` runs them, those run more than once left out."""
    calls: Dict[str, int] = {}
    order: List[str] = []
    handles = []
    for name, module in model.named_modules():
        if name and _fittable(module):
            def hook(mod, inputs, output, name=name):
                calls[name] = calls.get(name, 0) + 1
                if calls[name] == 1:
                    order.append(name)
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return [n for n in order if calls[n] == 1]


def _capture(model: nn.Module, module: nn.Module, x: torch.Tensor, want: str) -> Optional[torch.Tensor]:
    """``module``'s input (``want="in"``) or output during ``model(x)``, stopping the pass there (``None``: not run)."""
    box = {}

    def hook(mod, inputs, output):
        box["v"] = (inputs[0] if want == "in" else output).detach()
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return box.get("v")


def _rows(op: nn.Module, x: torch.Tensor, y: torch.Tensor, positions: Optional[torch.Tensor]
          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The linear problem ``op`` solves on a batch: (inputs as rows, targets as rows)."""
    if isinstance(op, nn.Linear):
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    cols = F.unfold(x, op.kernel_size, dilation=op.dilation, padding=op.padding, stride=op.stride)
    a = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    t = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
    if positions is not None:
        a, t = a[positions], t[positions]
    return a, t


def _weights(op: nn.Module) -> torch.Tensor:
    """``op``'s weights as the ``(in [+ 1], out)`` matrix of the rows' problem."""
    w = op.weight.detach().reshape(op.weight.shape[0], -1).T.double().cpu()
    return torch.cat([w, op.bias.detach()[None].double().cpu()]) if op.bias is not None else w


def reconstruct(pruned: nn.Module, base_model: nn.Module, images: torch.Tensor, *,
                kept: Optional[Mapping[str, Optional[torch.Tensor]]] = None, ridge: float = 1e-3,
                max_rows: int = MAX_ROWS, batch_size: int = 256, seed: int = 0) -> Dict[str, Tuple[float, float]]:
    """Refit, in place, the last linear operation of each layer of ``pruned`` to ``base_model``'s outputs.

    Layers are matched by name: the pruned model's ``conv2`` (a layer or the ``nn.Sequential`` of
    a decomposed layer) is refit to reproduce the base model's ``conv2`` on the output channels
    in ``kept["conv2"]`` (all of them where ``kept`` has no entry). A layer whose refit would
    reproduce the base model's outputs worse than its inherited weights keeps them.

    Args:
        pruned: The pruned model (modified in place; evaluated in eval mode, its mode restored).
        base_model: The unpruned model it was cut from (not modified).
        images: A batch of training inputs both models accept.
        kept: ``{layer name: base output indices the pruned layer kept}`` (see
            :func:`kept_outputs`); layers absent keep every output.
        ridge: Ridge penalty, relative to the mean diagonal of each problem's Gram matrix, > 0.
        max_rows: Rows of each least-squares problem at most (convolutions sample positions).
        batch_size: Images per forward pass.
        seed: Seeds the sampled positions.

    Returns:
        ``{layer name: (relative error before, after)}`` of every layer refit or kept, the error
        being the mean squared difference from the base outputs over their variance.

    Raises:
        MopruneValueError: an invalid argument.
    """
    if not isinstance(pruned, nn.Module) or not isinstance(base_model, nn.Module):
        raise invalid_value("pruned, base_model", "two nn.Modules", f"{type(pruned).__name__}, "
                            f"{type(base_model).__name__}")
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or len(images) < 1:
        raise invalid_value("images", "a non-empty batch tensor", type(images).__name__)
    ridge = check_real("ridge", ridge, low=0, low_open=True)
    max_rows = check_int("max_rows", max_rows, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    generator = torch.Generator().manual_seed(check_seed(seed))
    device = next(iter(base_model.parameters()), torch.empty(0)).device
    pruned.to(device)
    images = images.to(device)
    kept = {name: index.to(device) for name, index in (kept or {}).items() if index is not None}
    modes = pruned.training, base_model.training
    pruned.eval()
    base_model.eval()
    errors: Dict[str, Tuple[float, float]] = {}
    try:
        base_modules = dict(base_model.named_modules())
        pruned_modules = dict(pruned.named_modules())
        for name in _call_order(base_model, images[:1]):
            if name not in pruned_modules:
                continue
            op = _last_op(pruned_modules[name])
            errors.update(_refit(name, op, pruned, base_model, base_modules[name], images, kept.get(name),
                                 ridge, max_rows, batch_size, generator))
    finally:
        pruned.train(modes[0])
        base_model.train(modes[1])
    return errors


def _refit(name, op, pruned, base_model, base_layer, images, out_index, ridge, max_rows, batch_size, generator):
    """Solve one layer's ridge problem and write the weights if they reproduce the base better."""
    if not _fittable(op) or type(op) is not type(base_layer):
        return {}
    gram = cross = None
    sq_err_before = total = 0.0
    t_sum = t_sq = 0.0
    w_old = _weights(op)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        y = _capture(base_model, base_layer, x, "out")
        inputs = _capture(pruned, op, x, "in")
        if y is None or inputs is None:
            return {}  # not run by one of the models
        if out_index is not None:
            y = y[:, out_index]
        if y.shape[1] != op.weight.shape[0]:
            return {}  # the layer's outputs do not correspond to the base layer's
        positions = None
        if isinstance(op, nn.Conv2d):
            n_rows = len(x) * y.shape[2] * y.shape[3]
            budget = max(1, max_rows * len(x) // len(images))
            if n_rows > budget:
                positions = torch.randperm(n_rows, generator=generator)[:budget]
        a, t = _rows(op, inputs, y, positions)
        a, t = a.double().cpu(), t.double().cpu()
        if op.bias is not None:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
        gram = a.T @ a if gram is None else gram + a.T @ a
        cross = a.T @ t if cross is None else cross + a.T @ t
        sq_err_before += float(((a @ w_old - t) ** 2).sum())
        total += t.numel()
        t_sum += float(t.sum())
        t_sq += float((t ** 2).sum())
    variance = max(t_sq / total - (t_sum / total) ** 2, 1e-12)
    lam = ridge * float(gram.diagonal().mean())
    w = torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=gram.dtype), cross)
    # inputs never active on these images (dead channels, padding) get exact zeros from the solve;
    # they keep their weights, so retraining (which keeps exact zeros) does not lose them
    silent = gram.diagonal() == 0
    w[silent] = w_old[silent]
    # sum ||a w - t||^2 = w' G w - 2 w' C + sum t^2, from the accumulated products
    sq_err_after = float((w * (gram @ w)).sum() - 2 * (w * cross).sum()) + t_sq
    before, after = sq_err_before / total / variance, max(sq_err_after, 0.0) / total / variance
    if not np.isfinite(after) or after >= before:
        return {name: (before, before)}
    with torch.no_grad():
        n_in = w.shape[0] - (op.bias is not None)
        op.weight.copy_(w[:n_in].T.reshape(op.weight.shape).to(op.weight))
        if op.bias is not None:
            op.bias.copy_(w[n_in].to(op.bias))
    return {name: (before, after)}


def reconstruct_by_default(base_model: Optional[nn.Module]) -> bool:
    """Whether :func:`moprune.retrain` refits layers when not told: for base models without BatchNorm.

    Measured after one epoch of retraining at about 5% of the MACs on Fashion-MNIST (the session-26
    log of ``docs/search_quality.md``): the refit adds 1.5 test points to uniform pruning of
    ``mnist_cnn`` (0.4 on MNIST) but costs 0.6 on ``vgg_small`` and 3.1 on ``resnet8``, whose
    BatchNorm layers re-learn the scale of their inputs in a few steps anyway.
    """
    from moprune.evaluation.evaluator import has_batchnorm

    return base_model is not None and not has_batchnorm(base_model)


def supports_reconstruction(space: Any) -> bool:
    """Whether :func:`kept_outputs` knows ``space`` (channel, low-rank and channel + low-rank spaces)."""
    from moprune.space import ChannelSpace, LowRankChannelSpace, LowRankSpace

    return isinstance(space, (ChannelSpace, LowRankChannelSpace, LowRankSpace))


def kept_outputs(space: Any, genome: np.ndarray) -> Dict[str, torch.Tensor]:
    """``{layer name: base output indices kept}`` of the layers that ``genome`` pruned outputs of.

    Raises:
        MopruneValueError: a space whose models cannot be reconstructed (weight masks).
    """
    from moprune.space import ChannelSpace, LowRankChannelSpace, LowRankSpace

    genome = np.asarray(genome)
    if isinstance(space, LowRankChannelSpace):
        ratios = space.check_population(space.check_genome(genome), "genome")[0, :space.n_channel_genes]
        return kept_outputs(space.channels, ratios / float(space.channel_levels))
    if isinstance(space, ChannelSpace):
        return {name: sides["out"] for name, sides in space._kept_indices(genome).items() if "out" in sides}
    if isinstance(space, LowRankSpace):
        return {}
    raise invalid_value("space", "a ChannelSpace, LowRankSpace or LowRankChannelSpace (weight masks cannot be "
                        "reconstructed)", type(space).__name__)


def reconstructed(space: Any, genome: np.ndarray, base_model: nn.Module, train_data: Any, *,
                  n_samples: int = RECONSTRUCT_SAMPLES, seed: int = 0) -> nn.Module:
    """``space.materialize(genome)``, its layers refit to ``base_model``'s outputs (:func:`reconstruct`).

    Args:
        space: A space :func:`supports_reconstruction` accepts.
        genome: The candidate's genome.
        base_model: The model ``space`` was built on.
        train_data: A ``TensorDataset`` of training images (labels unused).
        n_samples: Images the problems are set up on (a seeded random subset), at least 1.
        seed: Seeds the subset and the sampled positions.
    """
    n_samples = check_int("n_samples", n_samples, low=1)
    seed = check_seed(seed)
    kept = kept_outputs(space, genome)
    model = space.materialize(np.asarray(genome))
    images = train_data.tensors[0]
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(images), generator=generator)[:n_samples]
    errors = reconstruct(model, base_model, images[index], kept=kept, seed=seed)
    model.cpu()
    _log.debug("reconstructed %s", {k: f"{b:.3f}->{a:.3f}" for k, (b, a) in errors.items()})
    return model
