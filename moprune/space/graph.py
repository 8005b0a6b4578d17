"""Tracing and slicing helpers of :class:`moprune.space.ChannelSpace`.

``trace`` runs the model once to build Torch-Pruning's dependency graph and record every leaf
module call (shapes, output ``grad_fn``); ``slice_module`` cuts one module's tensors along kept
input/output channels into a ``copy.deepcopy`` memo, so the pruned copy never holds full tensors.
"""

import warnings

import torch
from torch import nn

from moprune.exceptions import MopruneError
from moprune.logging import get_logger

_LOG = get_logger("space")
#: Module types whose tensors ``slice_module`` can cut (others coupled to a group are refused).
SLICEABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm,
             nn.modules.instancenorm._InstanceNorm, nn.PReLU)


def is_depthwise(m):
    """True for a depthwise convolution (``groups == in_channels == out_channels > 1``)."""
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.in_channels == m.out_channels > 1


def as_tuple(inputs):
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def trace(work, example_inputs):
    """Build the dependency graph and record every leaf call's shapes and output grad_fn."""
    import torch_pruning as tp

    calls, current, handles = {}, [None], []

    def pre(name):
        def hook(module, inputs):
            current[0] = name
        return hook

    def post(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and inputs and isinstance(inputs[0], torch.Tensor):
                calls.setdefault(name, []).append((tuple(inputs[0].shape), tuple(output.shape), output.grad_fn))
        return hook

    for name, m in work.named_modules():
        if next(m.children(), None) is None:
            handles.append(m.register_forward_pre_hook(pre(name)))
    try:  # a plain forward first: Torch-Pruning's own retry would hide the real error
        with torch.no_grad():
            work(*as_tuple(example_inputs))
    except Exception as exc:
        for h in handles:
            h.remove()
        raise MopruneError(
            f"the model failed on example_inputs in module {current[0]!r} ({type(exc).__name__}: {exc}); "
            "fix example_inputs, or pass that module in ignored_layers= if tracing it is the problem"
        ) from exc
    for name, m in work.named_modules():
        if next(m.children(), None) is None:
            handles.append(m.register_forward_hook(post(name)))
    try:
        with torch.enable_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = tp.DependencyGraph().build_dependency(work, example_inputs=as_tuple(example_inputs), verbose=True)
    except Exception as exc:
        raise MopruneError(
            f"Torch-Pruning could not trace the model ({type(exc).__name__}: {exc}); the last module entered was "
            f"{current[0]!r}. Pass the offending layer in ignored_layers= or check example_inputs."
        ) from exc
    finally:
        for h in handles:
            h.remove()
    for w in caught:  # e.g. an unknown op, treated as element-wise: worth a look if results look wrong
        _LOG.warning("Torch-Pruning: %s", w.message)
    # map a call's output grad_fn to the graph node of that op (pools are graph ops, not modules)
    by_gf = {node.grad_fn: node for node in graph.module2node.values() if node.grad_fn is not None}
    gf2call = {}
    for records in calls.values():
        for rec in records:
            if rec[2] is not None and rec[2] in by_gf:
                gf2call[id(rec[2])] = by_gf[rec[2]]
    return graph, calls, gf2call


def flatten_thop(info, prefix=""):
    for name, (ops, params, children) in info.items():
        full = f"{prefix}{name}"
        if children:
            yield from flatten_thop(children, full + ".")
        else:
            yield full, (ops, params)


def side_size(m, side):
    """Channel count of ``m`` on ``side`` (``"in"`` or ``"out"``)."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels if side == "out" else m.in_channels
    if isinstance(m, nn.Linear):
        return m.out_features if side == "out" else m.in_features
    if isinstance(m, nn.PReLU):
        return m.num_parameters
    return m.num_features


def slice_module(m, keep_in, keep_out, memo):
    """Put sliced copies of ``m``'s tensors in the deepcopy ``memo``; return the new attributes."""

    def put(t, dim, idx):
        new = torch.index_select(t, dim, idx)
        memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
        return new

    tensors = [t for t in (getattr(m, "weight", None), getattr(m, "running_mean", None)) if t is not None]
    if tensors:  # index tensors must live where the weights live
        keep_in = None if keep_in is None else keep_in.to(tensors[0].device)
        keep_out = None if keep_out is None else keep_out.to(tensors[0].device)
    attrs = {}
    if isinstance(m, nn.modules.conv._ConvNd):
        w = m.weight
        if is_depthwise(m):
            n = len(keep_out)
            new_w = torch.index_select(w, 0, keep_out)
            attrs.update(in_channels=n, out_channels=n, groups=n)
        else:
            new_w = w if keep_out is None else torch.index_select(w, 0, keep_out)
            new_w = new_w if keep_in is None else torch.index_select(new_w, 1, keep_in)
            if keep_out is not None:
                attrs["out_channels"] = len(keep_out)
            if keep_in is not None:
                attrs["in_channels"] = len(keep_in)
        memo[id(w)] = nn.Parameter(new_w, requires_grad=w.requires_grad)
        if m.bias is not None and keep_out is not None:
            put(m.bias, 0, keep_out)
    elif isinstance(m, nn.Linear):
        w = m.weight
        new_w = w if keep_out is None else torch.index_select(w, 0, keep_out)
        new_w = new_w if keep_in is None else torch.index_select(new_w, 1, keep_in)
        memo[id(w)] = nn.Parameter(new_w, requires_grad=w.requires_grad)
        if keep_out is not None:
            attrs["out_features"] = len(keep_out)
            if m.bias is not None:
                put(m.bias, 0, keep_out)
        if keep_in is not None:
            attrs["in_features"] = len(keep_in)
    elif isinstance(m, nn.PReLU):
        if m.num_parameters > 1:
            put(m.weight, 0, keep_out)
            attrs["num_parameters"] = len(keep_out)
    else:  # BatchNorm / InstanceNorm
        for t in (m.weight, m.bias, m.running_mean, m.running_var):
            if t is not None:
                put(t, 0, keep_out)
        attrs["num_features"] = len(keep_out)
    return attrs
