"""Unstructured pruning: individual weights of convolution and linear layers are zeroed.

Two encodings:

* ``"ratio"`` (GeneCAI's non-structured pruning): one real per layer, the fraction of its weights
  kept; the weights of smallest magnitude are zeroed first (ties broken by position).
* ``"mask"`` (document 002): one bit per weight of the chosen layers, layer after layer in
  ``layers`` order, each layer's weight flattened row-major. Document 002's layer-wise mode
  optimises one layer's slice at a time: :meth:`WeightSpace.layer_slice` and
  :meth:`WeightSpace.embed` give that slice and put an evolved slice back into a full genome.

Costs (:meth:`WeightSpace.cost`):

* ``params``: parameters of the model (thop's count) minus the zeroed prunable weights, i.e. the
  non-zero parameters when the base weights themselves have no exact zeros;
* ``macs``: thop's MACs minus the multiplications by a zeroed weight (each conv weight is used once
  per output position, each linear weight once per output row): what a sparse kernel computes;
* ``dense_macs``: thop's MACs of the masked model, which unstructured pruning does not change;
* ``sparsity``: zeroed prunable weights / prunable weights.
"""

import copy
import hashlib
import warnings
from typing import Dict, Iterable, Optional, Union

import numpy as np
import torch
from pymoo.core.repair import Repair
from torch import nn

from moprune.exceptions import invalid_value
from moprune.space.base import Plan, Space, default_example_inputs

ENCODINGS = ("ratio", "mask")


class WeightSpace(Space):
    """Which individual weights of each chosen layer to keep.

    Args:
        model: The trained base model; it is never modified.
        example_inputs: A tensor the model accepts (batch size 1; MACs are counted for it).
            ``None``: zeros of shape ``(1, *model.input_shape)``.
        encoding: ``"ratio"`` (one keep fraction per layer) or ``"mask"`` (one bit per weight).
        layers: Conv/Linear modules or their qualified names (``None``: every ``Conv*d`` and
            ``Linear`` of the model, classifier included).

    Attributes:
        group_names: The layer names, in genome order (also ``layer_names``).
        group_slices: Each layer's slice of the genome.
        group_sizes: Weights per layer.
        n_weights: Prunable weights in total.
    """

    def __init__(self, model: nn.Module, example_inputs: Optional[torch.Tensor] = None, *, encoding: str = "ratio",
                 layers: Optional[Iterable[Union[str, nn.Module]]] = None) -> None:
        if encoding not in ENCODINGS:
            raise invalid_value("encoding", f"one of {ENCODINGS}", encoding)
        if not isinstance(model, nn.Module):
            raise invalid_value("model", "a torch.nn.Module", type(model).__name__)
        example_inputs = default_example_inputs(model, example_inputs)
        self.model = model
        self.encoding = encoding
        self.vtype = float if encoding == "ratio" else bool
        names = {m: n for n, m in model.named_modules()}
        if layers is None:
            layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        chosen = []
        for item in layers:
            module = model.get_submodule(item) if isinstance(item, str) and item in dict(model.named_modules()) else item
            if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or module not in names:
                raise invalid_value("layers", "Conv/Linear modules of the model or their qualified names", item)
            chosen.append(names[module])
        if not chosen:
            raise invalid_value("layers", "at least one Conv/Linear layer", layers)
        self.group_names = self.layer_names = chosen
        self._weights = [model.get_submodule(n).weight for n in chosen]
        self.group_sizes = [w.numel() for w in self._weights]
        self.n_weights = int(sum(self.group_sizes))
        starts = np.cumsum([0] + self.group_sizes)
        self._weight_slices = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        self.group_slices = (list(self._weight_slices) if encoding == "mask"
                             else [slice(i, i + 1) for i in range(len(chosen))])
        self.n_var = self.n_weights if encoding == "mask" else len(chosen)
        self.xl, self.xu = np.zeros(self.n_var), np.ones(self.n_var)
        # rank of each weight in its layer by magnitude (0 = smallest, zeroed first)
        self._rank = []
        for w in self._weights:
            a = w.detach().abs().flatten().double().numpy()
            order = np.lexsort((np.arange(a.size), a))
            rank = np.empty(a.size, dtype=np.int64)
            rank[order] = np.arange(a.size)
            self._rank.append(rank)
        self._macs_per_weight = self._count(example_inputs)

    def _count(self, example_inputs):
        import thop

        uses = {n: 0 for n in self.group_names}
        work = copy.deepcopy(self.model).eval()
        for n in self.group_names:

            def hook(module, inputs, out, n=n):
                uses[n] += out.numel() // (out.shape[-1] if isinstance(module, nn.Linear) else out.shape[1])

            work.get_submodule(n).register_forward_hook(hook)
        inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        with torch.no_grad():
            work(*inputs)
        work = copy.deepcopy(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs, params = thop.profile(work, inputs=inputs, verbose=False)
        self.base_macs, self.base_params = int(macs), int(params)
        return np.asarray([uses[n] for n in self.group_names], dtype=np.float64)

    # ------------------------------------------------------------------ genomes
    def _zeroed(self, X):
        """``n x n_layers`` count of zeroed weights."""
        if self.encoding == "mask":
            return np.stack([(~X[:, sl]).sum(axis=1) for sl in self._weight_slices], axis=1).astype(np.float64)
        sizes = np.asarray(self.group_sizes)
        keep = np.ceil(np.clip(X, 0.0, 1.0) * sizes - 1e-9)
        return (sizes - keep).astype(np.float64)

    def masks(self, x: np.ndarray) -> Dict[str, torch.Tensor]:
        """Genome -> ``{layer_name: bool tensor shaped like its weight}`` (True = kept).

        Useful to keep pruned weights at zero while fine-tuning a materialized model.
        """
        x = self.check_population(self.check_genome(x), "x")[0]
        out = {}
        if self.encoding == "mask":
            for n, w, sl in zip(self.group_names, self._weights, self._weight_slices):
                out[n] = torch.from_numpy(x[sl].copy()).reshape(w.shape)
        else:
            for n, w, rank, z in zip(self.group_names, self._weights, self._rank, self._zeroed(x[None])[0]):
                out[n] = torch.from_numpy(rank >= int(z)).reshape(w.shape)
        return out

    def decode(self, x: np.ndarray) -> Plan:
        """Genome -> :class:`Plan`.

        ``plan.kept`` holds ``(layer, sparsity)`` per layer (ratio encoding) or ``(layer, packed
        mask bytes)`` (mask encoding: the bits themselves rather than a digest, so that
        :meth:`materialize` can rebuild the model from the plan alone).
        """
        x = self.check_population(self.check_genome(x), "x")[0]
        zeroed = self._zeroed(x[None])[0]
        sparsity = zeroed / np.asarray(self.group_sizes)
        summary = {f"sparsity/{n}": float(s) for n, s in zip(self.group_names, sparsity)}
        if self.encoding == "ratio":
            kept = tuple((n, float(s)) for n, s in zip(self.group_names, sparsity))
            payload = zeroed.astype(np.int64).tobytes()
        else:  # the packed bits themselves, so that a plan alone rebuilds the model (e.g. in a worker)
            packed = [np.packbits(x[sl]).tobytes() for sl in self._weight_slices]
            kept = tuple(zip(self.group_names, packed))
            payload = b"".join(packed)
        key = hashlib.blake2b(self.encoding.encode() + payload, digest_size=8).hexdigest()
        return Plan(kind="weights", kept=kept, key=key, summary=summary)

    def materialize(self, x: Union[np.ndarray, Plan]) -> nn.Module:
        """Genome or plan -> a copy of the model with the pruned weights set to zero (eval mode)."""
        if isinstance(x, Plan):
            if x.kind != "weights" or [n for n, _ in x.kept] != self.group_names:
                raise invalid_value("x", "a genome or a weights plan decoded by this space", x.key)
            if self.encoding == "mask":
                x = np.concatenate([np.unpackbits(np.frombuffer(b, dtype=np.uint8), count=size).astype(bool)
                                    for (_, b), size in zip(x.kept, self.group_sizes)])
            else:
                sizes = np.asarray(self.group_sizes)
                x = (sizes - np.round(np.asarray([s for _, s in x.kept]) * sizes)) / sizes
        memo = {}
        with torch.no_grad():
            for w, mask in zip(self._weights, self.masks(x).values()):
                memo[id(w)] = nn.Parameter(w * mask.to(w.dtype), requires_grad=w.requires_grad)
        return copy.deepcopy(self.model, memo).eval()

    def rebase(self, pruned_model: nn.Module, x_or_plan: Union[np.ndarray, Plan]) -> "WeightSpace":
        """A space over a copy of the base model updated with a masked model's (retrained) weights.

        Document 001's two-step framework retrains the elite and searches on: in every chosen
        layer the kept weights get ``pruned_model``'s values and the pruned ones keep the base
        model's; every other parameter and buffer (biases, BatchNorm, layers outside the space)
        is taken from ``pruned_model``. The new space keeps the genome layout, costs and the
        magnitude ranking of this space (not recomputed, so a ratio genome keeps zeroing the same
        weights). If ``pruned_model`` kept its pruned weights at zero (masked fine-tuning),
        ``rebased.materialize(x_or_plan)`` computes exactly what it computes. This space and its
        model are not modified.

        Args:
            pruned_model: A model of the base architecture, e.g. ``self.materialize(x_or_plan)``
                after masked fine-tuning.
            x_or_plan: The genome or :class:`Plan` ``pruned_model`` was materialized from.

        Returns:
            A new :class:`WeightSpace`.

        Raises:
            MopruneValueError: ``pruned_model`` does not have the base model's parameter shapes.
        """
        if not isinstance(pruned_model, nn.Module):
            raise invalid_value("pruned_model", "a torch.nn.Module", type(pruned_model).__name__)
        masks = self.masks(self._genome_of(x_or_plan))
        model = copy.deepcopy(self.model)
        values = dict(pruned_model.named_parameters())
        values.update(pruned_model.named_buffers())
        weight_of = {f"{n}.weight": n for n in self.group_names}
        with torch.no_grad():
            for name, target in list(model.named_parameters()) + list(model.named_buffers()):
                value = values.get(name)
                if value is None or value.shape != target.shape:
                    raise invalid_value("pruned_model", f"a model of the base architecture (tensor {name!r} of shape "
                                        f"{tuple(target.shape)})", None if value is None else tuple(value.shape))
                if name in weight_of:
                    mask = masks[weight_of[name]].to(target.device)
                    target.copy_(torch.where(mask, value.to(target.device, target.dtype), target))
                else:
                    target.copy_(value)
        new = copy.copy(self)
        new.model = model
        new._weights = [model.get_submodule(n).weight for n in self.group_names]
        return new

    def _genome_of(self, x):
        """A genome, or the genome of a plan decoded by this space."""
        if not isinstance(x, Plan):
            return x
        if x.kind != "weights" or [n for n, _ in x.kept] != self.group_names:
            raise invalid_value("x", "a genome or a weights plan decoded by this space", x.key)
        if self.encoding == "mask":
            return np.concatenate([np.unpackbits(np.frombuffer(b, dtype=np.uint8), count=size).astype(bool)
                                   for (_, b), size in zip(x.kept, self.group_sizes)])
        sizes = np.asarray(self.group_sizes)
        return (sizes - np.round(np.asarray([s for _, s in x.kept]) * sizes)) / sizes

    def cost(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Costs of a population (see the module docstring for the exact definitions).

        Returns:
            Dict of float arrays: ``"macs"``, ``"dense_macs"``, ``"params"``, ``"macs_ratio"``,
            ``"params_ratio"``, ``"sparsity"``.
        """
        zeroed = self._zeroed(self.check_population(X))
        macs = self.base_macs - zeroed @ self._macs_per_weight
        params = self.base_params - zeroed.sum(axis=1)
        return {"macs": macs, "dense_macs": np.full(len(zeroed), float(self.base_macs)), "params": params,
                "macs_ratio": macs / self.base_macs, "params_ratio": params / self.base_params,
                "sparsity": zeroed.sum(axis=1) / self.n_weights}

    def keep_order(self) -> Optional[np.ndarray]:
        """Mask encoding: each weight's magnitude rank within its layer (0 = largest, kept first)."""
        if self.encoding != "mask":
            return None
        return np.concatenate([rank.size - 1 - rank for rank in self._rank])

    def repair(self) -> Repair:
        """A pymoo ``Repair``: clips ratios into [0, 1]; mask genomes are cast to bool."""
        return WeightRepair(self.encoding)

    # ------------------------------------------------------------------ layer-wise mode
    def layer_slice(self, name: str) -> slice:
        """The genome slice of layer ``name`` (document 002's layer-wise mode evolves only this)."""
        if name not in self.group_names:
            raise invalid_value("name", f"one of {self.group_names}", name)
        return self.group_slices[self.group_names.index(name)]

    def embed(self, name: str, x_layer: np.ndarray, x: Optional[np.ndarray] = None) -> np.ndarray:
        """Return a copy of ``x`` (default: the original model) with layer ``name``'s genes replaced."""
        sl = self.layer_slice(name)
        full = self.original() if x is None else self.check_genome(x).astype(self.vtype)
        x_layer = np.asarray(x_layer).reshape(-1)
        if x_layer.shape[0] != sl.stop - sl.start:
            raise invalid_value("x_layer", f"an array of length {sl.stop - sl.start}", f"shape {x_layer.shape}")
        full[sl] = x_layer
        return full


class WeightRepair(Repair):
    """Clip ratio genomes into [0, 1]; cast mask genomes to bool."""

    def __init__(self, encoding):
        super().__init__()
        self.encoding = encoding

    def _do(self, problem, X, **kwargs):
        if self.encoding == "mask":
            return np.asarray(X).astype(bool)
        return np.clip(np.asarray(X, dtype=np.float64), 0.0, 1.0)
