"""Save a pruned model as one self-contained file and load it back; optional ONNX export.

The file is a plain ``torch.save`` of a dict that ``torch.load(..., weights_only=True)`` accepts
(tensors, dicts, lists, strings, numbers only; no pickled classes):

- ``format``/``version``: ``"moprune-export"``, ``1``;
- ``factory``: the zoo name of the model's class (``"mnist_cnn"``...) or ``None``;
- ``modules``: for every Conv/Linear/BatchNorm/GroupNorm/LayerNorm module, its name, type and
  constructor arguments (the pruned shapes), and for every ``nn.Sequential`` its length (a
  low-rank factorisation replaces one layer by a sequence of smaller ones);
- ``state_dict``: the weights (a ``torch.nn.utils.prune`` re-parametrisation is folded in);
- ``meta``: the caller's dict (plain values only), plus ``torch_version`` and ``moprune_version``.

:func:`load` rebuilds the architecture from the zoo (or from a template model the caller
passes), swaps every recorded module for one of the recorded shape, and loads the weights.
"""

import importlib.util
import os
import pickle
import warnings
import zipfile
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from moprune.exceptions import DataError, MopruneError, MopruneValueError, invalid_value
from moprune.io import atomic_path
from moprune.validation import check_bool, check_int

PathLike = Union[str, os.PathLike]
"""A file path: a string or a path object."""

__all__ = ["FORMAT", "describe", "export", "export_onnx", "load", "load_meta"]

FORMAT = "moprune-export"
VERSION = 1

_CONV_TYPES = {"Conv1d": nn.Conv1d, "Conv2d": nn.Conv2d, "Conv3d": nn.Conv3d}
_BN_TYPES = {"BatchNorm1d": nn.BatchNorm1d, "BatchNorm2d": nn.BatchNorm2d, "BatchNorm3d": nn.BatchNorm3d}


def _as_list(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def _describe_module(module):
    """Constructor arguments of a supported module, or ``None`` for other modules."""
    kind = type(module).__name__
    if kind in _CONV_TYPES and type(module) is _CONV_TYPES[kind]:
        return {"type": kind, "in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel_size": _as_list(module.kernel_size), "stride": _as_list(module.stride),
                "padding": _as_list(module.padding), "dilation": _as_list(module.dilation),
                "groups": module.groups, "bias": module.bias is not None,
                "padding_mode": module.padding_mode}
    if type(module) is nn.Linear:
        return {"type": "Linear", "in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    if kind in _BN_TYPES and type(module) is _BN_TYPES[kind]:
        return {"type": kind, "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats}
    if type(module) is nn.GroupNorm:
        return {"type": "GroupNorm", "num_groups": module.num_groups, "num_channels": module.num_channels,
                "eps": module.eps, "affine": module.affine}
    if type(module) is nn.LayerNorm:
        return {"type": "LayerNorm", "normalized_shape": list(module.normalized_shape), "eps": module.eps,
                "elementwise_affine": module.elementwise_affine, "bias": module.bias is not None}
    if type(module) is nn.Sequential:
        return {"type": "Sequential", "length": len(module)}
    return None


def _build_module(spec):
    spec = dict(spec)
    kind = spec.pop("type")
    if kind in _CONV_TYPES:
        for key in ("kernel_size", "stride", "padding", "dilation"):
            if isinstance(spec[key], list):
                spec[key] = tuple(spec[key])
        return _CONV_TYPES[kind](**spec)
    if kind == "Linear":
        return nn.Linear(**spec)
    if kind in _BN_TYPES:
        return _BN_TYPES[kind](**spec)
    if kind == "GroupNorm":
        return nn.GroupNorm(**spec)
    if kind == "LayerNorm":
        spec["normalized_shape"] = tuple(spec["normalized_shape"])
        return nn.LayerNorm(**spec)
    if kind == "Sequential":  # placeholders; the recorded children replace them
        return nn.Sequential(*[nn.Identity() for _ in range(int(spec["length"]))])
    raise DataError(f"the export file records a module of unknown type {kind!r}")


def describe(model):
    """The structural description :func:`export` stores: ``{module name: constructor arguments}``."""
    return {name: spec for name, module in model.named_modules()
            if name and (spec := _describe_module(module)) is not None}


def _zoo_name(model):
    from moprune.models.zoo import MODELS

    for name in MODELS.names():
        if MODELS.get(name) is type(model):
            return name
    return None


def _plain_state_dict(model):
    """``model.state_dict()`` with ``torch.nn.utils.prune`` masks folded into the weights."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key in [k for k in state if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        if base + "_mask" in state:
            state[base] = state.pop(key) * state.pop(base + "_mask")
    return state


def _check_plain(value, where):
    """Raise unless ``value`` is made only of what ``torch.load(weights_only=True)`` reads back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, torch.Tensor):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise invalid_value(f"{where} key", "a str or an int", key)
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise invalid_value(where, "made of dicts, lists, strings, numbers, None and tensors only",
                        type(value).__name__)


def _set_submodule(root, name, module):
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _rebuild(payload, template):
    """The model described by ``payload``: ``template`` (or the zoo factory) with modules swapped."""
    import copy

    if template is not None:
        model = copy.deepcopy(template)
    elif payload.get("factory") is not None:
        if not isinstance(payload["factory"], str):
            raise DataError(f"the export's model name is malformed: {payload['factory']!r}")
        from moprune.models.zoo import get_model

        try:
            model = get_model(payload["factory"])
        except MopruneValueError as exc:
            raise DataError(f"the export was made from model {payload['factory']!r}, which this moprune "
                            f"does not know: {exc}") from None
    else:
        raise MopruneValueError(
            f"this export was made from a model outside the zoo ({payload.get('class_name')}); "
            "pass model= an instance of the original (unpruned) architecture to load it into")
    names = dict(model.named_modules())
    for name, spec in payload["modules"].items():
        if (isinstance(spec, dict) and spec.get("type") == "Sequential" and type(names.get(name)) is nn.Sequential
                and len(names[name]) == spec.get("length")):
            continue  # the architecture's own sequence (its activations and pooling stay)
        if not isinstance(name, str) or name not in names or not name:
            raise DataError(f"the export records a module {name!r} that the "
                            f"{type(model).__name__} architecture does not have")
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise DataError(f"the export's description of module {name!r} is malformed (expected a dict with a "
                            f"'type'): {spec!r}")
        try:
            module = _build_module(spec)
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise DataError(f"the export's description of module {name!r} is malformed ({type(exc).__name__}: "
                            f"{exc})") from None
        _set_submodule(model, name, module)
        if isinstance(module, nn.Sequential):
            names = dict(model.named_modules())  # its children can be swapped next
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError, KeyError, ValueError) as exc:
        raise DataError(f"the exported weights do not fit the rebuilt {type(model).__name__}: {exc}") from None
    return model.eval()


def export(model: nn.Module, path: PathLike, *, meta: Optional[Dict[str, Any]] = None) -> PathLike:
    """Write ``model`` (pruned or not) to ``path`` as one self-contained file, atomically.

    The file is checked before it is written: the architecture is rebuilt from it in memory and
    must accept the weights, so a model that :func:`load` cannot rebuild fails here, not later.

    Args:
        model: An ``nn.Module`` built from the zoo (then :func:`load` needs nothing else) or any
            module made of Conv/Linear/BatchNorm layers and parameter-free modules (then
            :func:`load` needs a template of the original architecture).
        path: Destination file (e.g. ``"pruned.pt"``).
        meta: Optional dict of plain values (str, numbers, lists, dicts, tensors) stored alongside,
            e.g. the pick's accuracy and MACs.

    Returns:
        The path written.

    Raises:
        MopruneValueError: ``model`` is not a module, ``meta`` holds other objects, or the model
            cannot be rebuilt from its description.
    """
    if not isinstance(model, nn.Module):
        raise invalid_value("model", "a torch.nn.Module", type(model).__name__)
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise invalid_value("meta", "a dict or None", type(meta).__name__)
    _check_plain(meta, "meta")
    from moprune.version import __version__

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "factory": _zoo_name(model),
        "class_name": f"{type(model).__module__}.{type(model).__qualname__}",
        "modules": describe(model),
        "state_dict": _plain_state_dict(model),
        "meta": {**meta, "torch_version": str(torch.__version__), "moprune_version": str(__version__)},
    }
    if payload["factory"] is not None:
        try:
            _rebuild(payload, None)
        except MopruneError as exc:
            raise MopruneValueError(f"cannot export this {type(model).__name__}: {exc}") from None
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _read(path):
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            AttributeError, ImportError, IndexError, KeyError) as exc:
        raise DataError(f"{path!s} is not a readable moprune export (corrupt, truncated or not made by "
                        f"moprune.export): {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path!s} is not a moprune export (no format={FORMAT!r} marker)")
    if payload.get("version") != VERSION:
        raise DataError(f"{path!s} is a moprune export of version {payload.get('version')!r}; "
                        f"this moprune reads version {VERSION}")
    for key in ("modules", "state_dict", "meta"):
        if not isinstance(payload.get(key), dict):
            raise DataError(f"{path!s} is a malformed moprune export: {key!r} is missing")
    return payload


def load(path: PathLike, *, model: Optional[nn.Module] = None) -> nn.Module:
    """Rebuild the model saved by :func:`export` (loaded with ``torch.load(weights_only=True)``).

    Args:
        path: A file written by :func:`export`.
        model: A template of the original architecture (unpruned or not; it is not modified).
            Needed only for models outside the zoo.

    Returns:
        The rebuilt model, in eval mode.

    Raises:
        FileNotFoundError: no such file.
        DataError: the file is corrupt, not a moprune export, or its weights do not fit.
        MopruneValueError: a non-zoo export loaded without ``model``.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise invalid_value("model", "a torch.nn.Module or None", type(model).__name__)
    return _rebuild(_read(path), model)


def load_meta(path):
    """The ``meta`` dict stored by :func:`export` (with ``torch_version`` and ``moprune_version``)."""
    return _read(path)["meta"]


def export_onnx(model: nn.Module, path: PathLike, example_input: torch.Tensor, *, opset_version: Optional[int] = None,
                dynamic_batch: bool = True) -> PathLike:
    """Export ``model`` to one ONNX file (needs the ``onnx`` extra: ``pip install moprune[onnx]``).

    Args:
        model: The model to export (put in eval mode).
        path: Destination ``.onnx`` file, written atomically, weights inside.
        example_input: An input tensor, e.g. ``torch.zeros(1, 1, 28, 28)``.
        opset_version: ONNX opset (default: the exporter's).
        dynamic_batch: Let the batch dimension vary (input ``"input"``, output ``"logits"``).

    Returns:
        The path written.

    Raises:
        MopruneError: ``onnx`` is not installed.
    """
    if importlib.util.find_spec("onnx") is None:
        raise MopruneError("ONNX export needs the onnx package: pip install moprune[onnx]")
    if not isinstance(model, nn.Module):
        raise invalid_value("model", "a torch.nn.Module", type(model).__name__)
    if not isinstance(example_input, torch.Tensor):
        raise invalid_value("example_input", "a torch.Tensor", type(example_input).__name__)
    check_int("opset_version", opset_version, low=7, allow_none=True)
    check_bool("dynamic_batch", dynamic_batch)
    model.eval()
    kwargs = {"input_names": ["input"], "output_names": ["logits"], "opset_version": opset_version}
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript exporter writes one self-contained file and needs no onnxscript; torch
        # >= 2.9 marks it deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            torch.onnx.export(model, (example_input,), tmp, dynamo=False, **kwargs)
    return path
