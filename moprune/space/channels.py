"""Structured channel pruning: genes are the output channels of coupled layer groups.

The dependency graph is built once, on a private copy of the model, with Torch-Pruning. For every
prunable group it records which channel of which module each root channel maps to (residual
additions couple layers, flatten -> Linear maps one channel to ``H*W`` input columns). From then
on, nothing is traced again: a candidate is materialized by slicing the base model's tensors
through these index maps, and its cost is a few numpy products over kept-channel counts.
"""

import copy
import hashlib
import warnings
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch
from pymoo.core.repair import Repair
from torch import nn

from moprune.devices import Device, resolve_device
from moprune.exceptions import MopruneError, invalid_value
from moprune.logging import get_logger
from moprune.space.base import Plan, Space, default_example_inputs, resolve_layers
from moprune.space.cost import CostModel, add_module_cost
from moprune.space.graph import SLICEABLE, as_tuple, flatten_thop, is_depthwise, side_size, slice_module, trace
from moprune.space.importance import channel_importance
from moprune.validation import check_int

_LOG = get_logger("space")
ENCODINGS = ("binary", "ratio")
IMPORTANCES = ("l1", "taylor", "random")


class ChannelSpace(Space):
    """Which output channels of each prunable layer group to keep.

    Args:
        model: The trained base model; it is never modified.
        example_inputs: A tensor (or tuple of tensors) the model accepts; use batch size 1, as
            MACs are counted for it. ``None``: zeros of shape ``(1, *model.input_shape)``.
        encoding: ``"binary"`` (one bit per channel, documents 000/003) or ``"ratio"`` (one
            keep fraction in [0, 1] per group, GeneCAI).
        importance: Channel ranking used by ``"ratio"`` and by the repair: ``"l1"`` (L1 norm of
            the group's filters), ``"taylor"`` (sum of ``|activation * gradient|`` over
            ``importance_data``) or ``"random"`` (drawn from ``generator``).
        layers: Modules or qualified names; only groups containing one of them as a pruned
            output are searched (``None``: every prunable group).
        ignored_layers: Modules or names whose output channels are never pruned.
        min_channels: Channels each group keeps at least (enforced by :meth:`repair`, by
            :meth:`decode` and by :meth:`cost`).
        round_to: For ``"ratio"``: round each kept count (after ``min_channels``) up to a multiple
            of this, capped at the group size, for hardware-friendly widths.
        importance_data: For ``"taylor"``: a tensor batch (labels = the model's predictions), an
            ``(x, y)`` pair, a ``Dataset`` or an iterable of ``(x, y)`` batches.
        importance_batches: How many batches of ``importance_data`` to use.
        generator: ``torch.Generator`` or int seed for ``"random"`` (default seed 0).
        device: Where ``"taylor"`` importance runs its batches (see
            :func:`moprune.devices.resolve_device`); the space and its model stay on the CPU.

    Attributes:
        group_names, group_slices, group_sizes: One entry per group, in genome order (binary:
            ``group_sizes[i]`` genes; ratio: one gene). A group is named after its root module.
        members: ``{group_name: [(module_name, "in" | "out"), ...]}``, the coupled layers.
        importance_scores: ``{group_name: float array}``, higher is kept first.

    Raises:
        MopruneError: the dependency graph cannot trace the model or a coupled layer is of a
            type this space cannot slice; the message names the module.
        MopruneValueError: a bad argument.
    """

    def __init__(self, model: nn.Module, example_inputs: Optional[torch.Tensor] = None, *, encoding: str = "binary",
                 importance: str = "l1", layers: Optional[Iterable[Union[str, nn.Module]]] = None,
                 ignored_layers: Optional[Iterable[Union[str, nn.Module]]] = None, min_channels: int = 1,
                 round_to: Optional[int] = None, importance_data: Any = None, importance_batches: int = 4,
                 generator: Union[None, int, torch.Generator] = None, device: Device = "auto") -> None:
        if encoding not in ENCODINGS:
            raise invalid_value("encoding", f"one of {ENCODINGS}", encoding)
        if importance not in IMPORTANCES:
            raise invalid_value("importance", f"one of {IMPORTANCES}", importance)
        if not isinstance(model, nn.Module):
            raise invalid_value("model", "a torch.nn.Module", type(model).__name__)
        min_channels = check_int("min_channels", min_channels, low=1)
        round_to = check_int("round_to", round_to, low=1, allow_none=True)
        importance_batches = check_int("importance_batches", importance_batches, low=1)
        device = resolve_device(device)
        if importance == "taylor" and importance_data is None:
            raise invalid_value("importance_data", 'data (a tensor batch or a dataset) when importance="taylor"', None)
        example_inputs = default_example_inputs(model, example_inputs)
        self.model = model
        self.encoding = encoding
        self.importance = importance
        self.min_channels = min_channels
        self.round_to = round_to
        self.vtype = bool if encoding == "binary" else float
        self._example_inputs = example_inputs
        self._modules = dict(model.named_modules())
        layer_names = None if layers is None else set(resolve_layers(model, layers, "layers"))
        ignored_names = set(resolve_layers(model, ignored_layers or [], "ignored_layers"))

        work = copy.deepcopy(model).eval()
        graph, calls, gf2call = trace(work, example_inputs)
        self._collect_groups(work, graph, layer_names, ignored_names)
        self._build_cost(work, graph, calls, gf2call)
        scores = channel_importance(self, work, importance, importance_data, importance_batches, generator,
                                    device if importance == "taylor" else None)
        self._set_order(scores)
        self.base_macs, self.base_params = int(self._base_cost[0]), int(self._base_cost[1])
        _LOG.debug("ChannelSpace: %d groups, %d genes", len(self.group_names), self.n_genes)

    # ------------------------------------------------------------------ construction helpers
    def _collect_groups(self, work, graph, layer_names, ignored_names):
        order = {n: i for i, (n, _) in enumerate(work.named_modules())}
        name_of = {m: n for n, m in work.named_modules()}
        ignored = [m for m in work.modules() if name_of[m] in ignored_names]
        for n, m in work.named_modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m not in graph.module2node and n not in ignored_names:
                raise MopruneError(
                    f"module {n!r} ({type(m).__name__}) is not in the traced graph: its output does not reach "
                    "the model output through autograd (a .detach(), .numpy(), torch.no_grad or custom op?); "
                    "pass it in ignored_layers="
                )
        groups = []
        for group in graph.get_all_groups(ignored_layers=ignored):
            outs = [(dep.target, dep) for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
            if any(node.type == graph.ops.OPTYPE.OUTPUT or not node.outputs for node, _ in outs):
                continue  # feeds the model output: the classifier is never pruned
            roots = sorted((order[name_of[n.module]], name_of[n.module]) for n, _ in outs
                           if isinstance(n.module, (nn.modules.conv._ConvNd, nn.Linear)) and n.module in name_of)
            pruned_layers = {r for _, r in roots}
            if not roots or (layer_names is not None and not layer_names & pruned_layers):
                continue
            root = work.get_submodule(roots[0][1])
            if group[0].dep.target.module is not root:
                group = graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels,
                                                list(range(graph.get_out_channels(root))))
            groups.append((roots[0][0], roots[0][1], root, group, pruned_layers))
        groups.sort(key=lambda g: g[0])
        if layer_names is not None:
            found = set().union(*(names for _, _, _, _, names in groups))
            missing = sorted(layer_names - found)
            if missing:
                raise invalid_value("layers", "layers with prunable output channels (not the classifier)", missing)

        self.group_names, self.group_sizes, self.members = [], [], {}
        slices, dims, offset = {}, {}, 0
        for _, name, root, group, _ in groups:
            size = graph.get_out_channels(root)
            self.group_names.append(name)
            self.group_sizes.append(size)
            self.members[name] = []
            for item in group:
                dep, idxs = item[0], item[1]
                node, side = dep.target, ("out" if graph.is_out_channel_pruning_fn(dep.handler) else "in")
                tgt = np.asarray(idxs, dtype=np.int64)
                gene = offset + np.asarray(item.root_idxs, dtype=np.int64)
                if node.type == graph.ops.OPTYPE.PARAMETER:
                    raise MopruneError(f"group {name!r} reaches a bare nn.Parameter, which this space cannot "
                                       "slice; pass the layer producing it in ignored_layers=")
                module = node.module
                if module in name_of:
                    mname = name_of[module]
                    if not isinstance(module, SLICEABLE) or (
                            isinstance(module, nn.modules.conv._ConvNd)
                            and (module.transposed or (module.groups != 1 and not is_depthwise(module)))):
                        raise MopruneError(f"module {mname!r} ({type(module).__name__}) is coupled to group {name!r} "
                                           "but cannot be sliced by this space; pass it in ignored_layers=")
                    key = (mname, "out" if is_depthwise(module) else side)
                    self.members[name].append(key)
                else:
                    key = ("#node", id(node))  # pseudo op (pool, add, flatten): only its channel count matters
                dims.setdefault(key, []).append((tgt, gene))
                if key[0] != "#node":
                    slices.setdefault(key, []).append((tgt, gene))
            offset += size
        self.n_genes = offset
        self._slices = {k: (np.concatenate([t for t, _ in v]), np.concatenate([g for _, g in v])) for k, v in slices.items()}
        self._dim_items = dims
        starts = np.cumsum([0] + self.group_sizes)
        self._gene_slices = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        if self.encoding == "binary":
            self.group_slices = list(self._gene_slices)
        else:
            self.group_slices = [slice(i, i + 1) for i in range(len(self.group_names))]
        self.n_var = self.n_genes if self.encoding == "binary" else len(self.group_names)
        self.xl, self.xu = np.zeros(self.n_var), np.ones(self.n_var)
        if self.n_var == 0:
            raise MopruneError("no prunable channel group found (check layers= / ignored_layers=)")

    def _build_cost(self, work, graph, calls, gf2call):
        import thop
        from thop.profile import register_hooks

        dim_keys = list(self._dim_items)
        dim_index = {k: i for i, k in enumerate(dim_keys)}
        node_dim = {k[1]: i for k, i in dim_index.items() if k[0] == "#node"}
        sizes = np.zeros(len(dim_keys))
        M = np.zeros((self.n_genes, len(dim_keys)))
        for k, items in self._dim_items.items():
            i = dim_index[k]
            for tgt, gene in items:
                np.add.at(M[:, i], gene, 1.0)
            if k[0] == "#node":
                sizes[i] = max(int(t.max()) + 1 for t, _ in items)
            else:
                sizes[i] = side_size(work.get_submodule(k[0]), k[1])
        model = CostModel(len(dim_keys))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, _, info = thop.profile(copy.deepcopy(work), inputs=as_tuple(self._example_inputs), verbose=False,
                                      ret_layer_info=True)
        per_module = dict(flatten_thop(info))
        for mname, (ops, params) in per_module.items():
            module = work.get_submodule(mname)
            records = calls.get(mname, [])
            if type(module) not in register_hooks or not records:
                model.const_macs += ops
                model.const_params += params
                continue
            if module in graph.module2node:
                node_calls = [(records, dim_index.get((mname, "in")), dim_index.get((mname, "out")))]
                if is_depthwise(module) or not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                    node_calls = [(records, None, dim_index.get((mname, "out")))]
            else:  # pools etc. are graph ops, one node per call; their in/out channels coincide
                node_calls = []
                for rec in records:
                    node = gf2call.get(id(rec[2]))
                    d = node_dim.get(id(node)) if node is not None else None
                    if d is not None:
                        sizes[d] = rec[1][1]
                    node_calls.append(([rec], d, d))
            for recs, din, dout in node_calls:
                if not add_module_cost(model, module, mname, [(r[0], r[1]) for r in recs], din, dout):
                    model.const_macs += ops
                    model.const_params += params
                    break
        self._dim_sizes = sizes
        self._cost = model.freeze()
        # per dim the cost needs: its genes and how many of its channels each gene carries
        self._dim_genes = []
        for d in self._cost.used_dims:
            genes = np.flatnonzero(M[:, d])
            self._dim_genes.append((d, genes, M[genes, d]))
        thop_macs = sum(v[0] for v in per_module.values())
        thop_params = sum(v[1] for v in per_module.values())
        macs, params = self._cost.evaluate(sizes[None, :])
        if macs[0] != thop_macs or params[0] != thop_params:
            raise MopruneError(
                f"analytic cost of the base model ({macs[0]:.0f} MACs, {params[0]:.0f} params) disagrees with thop "
                f"({thop_macs:.0f}, {thop_params:.0f}); a layer type on a pruned path is not modelled: "
                "pass it in ignored_layers="
            )
        self._base_cost = (thop_macs, thop_params)

    def _set_order(self, scores):
        self.importance_scores = {}
        self._rank = np.zeros(self.n_genes, dtype=np.int64)
        self._order = []
        for name, sl, size in zip(self.group_names, self._gene_slices, self.group_sizes):
            s = np.asarray(scores[sl], dtype=np.float64)
            order = np.lexsort((np.arange(size), -s))  # most important first, ties by index
            self.importance_scores[name] = s
            self._order.append(order)
            self._rank[sl.start + order] = np.arange(size)
        self._min_keep = np.minimum(self.min_channels, np.asarray(self.group_sizes))

    # ------------------------------------------------------------------ genome -> channel mask
    def _masks(self, X):
        """Population (already validated) -> ``n x n_genes`` bool mask of kept channels."""
        if self.encoding == "binary":
            return _repair_bits(X.copy(), self._gene_slices, self._order, self._min_keep)
        sizes = np.asarray(self.group_sizes)
        keep = np.maximum(np.ceil(np.clip(X, 0.0, 1.0) * sizes - 1e-9).astype(np.int64), self._min_keep)
        if self.round_to:
            keep = np.minimum(sizes, -(-keep // self.round_to) * self.round_to)
        return self._rank[None, :] < np.repeat(keep, sizes, axis=1)

    def decode(self, x: np.ndarray) -> Plan:
        """Genome -> :class:`Plan` with the kept channel indices of every group.

        Raises:
            MopruneValueError: wrong length or type (the message gives the expected shape).
        """
        x = self.check_genome(x)
        mask = self._masks(self.check_population(x, "x"))[0]
        return self._plan(mask)

    def _plan(self, mask):
        kept = tuple((n, tuple(int(i) for i in np.flatnonzero(mask[sl])))
                     for n, sl in zip(self.group_names, self._gene_slices))
        key = hashlib.blake2b(np.packbits(mask).tobytes() + str(self.n_genes).encode(), digest_size=8).hexdigest()
        return Plan(kind="channels", kept=kept, key=key, summary={f"kept/{n}": len(k) for n, k in kept})

    def _plan_mask(self, plan):
        names = [n for n, _ in plan.kept]
        if plan.kind != "channels" or names != self.group_names:
            raise invalid_value("plan", "a channels plan decoded by this space", plan.key)
        mask = np.zeros(self.n_genes, dtype=bool)
        for (_, idx), sl in zip(plan.kept, self._gene_slices):
            mask[sl.start + np.asarray(idx, dtype=np.int64)] = True
        return mask

    # ------------------------------------------------------------------ the pruned model
    def _kept_indices(self, x_or_plan):
        """Genome or plan -> ``{module name: {"in"/"out": kept indices}}`` for the sides that lose channels."""
        if isinstance(x_or_plan, Plan):
            mask = self._plan_mask(x_or_plan)
        else:
            mask = self._masks(self.check_population(self.check_genome(x_or_plan), "x"))[0]
        keep = {}
        for (mname, side), (tgt, gene) in self._slices.items():
            removed = tgt[~mask[gene]]
            if removed.size:
                k = np.ones(side_size(self._modules[mname], side), dtype=bool)
                k[removed] = False
                keep.setdefault(mname, {})[side] = torch.from_numpy(np.flatnonzero(k))
        return keep

    def materialize(self, x_or_plan: Union[np.ndarray, Plan]) -> nn.Module:
        """Genome or plan -> a physically smaller copy of the model, in eval mode.

        Tensors are sliced from the base model with the index maps prepared at construction;
        the base model is never modified.
        """
        keep = self._kept_indices(x_or_plan)
        memo, attrs = {}, []
        with torch.no_grad():
            for mname, sides in keep.items():
                attrs.append((mname, slice_module(self._modules[mname], sides.get("in"), sides.get("out"), memo)))
        pruned = copy.deepcopy(self.model, memo)
        for mname, values in attrs:
            sub = pruned.get_submodule(mname)
            for k, v in values.items():
                setattr(sub, k, v)
        return pruned.eval()

    # ------------------------------------------------------------------ new base weights
    def rebase(self, pruned_model: nn.Module, x_or_plan: Union[np.ndarray, Plan]) -> "ChannelSpace":
        """A space over a copy of the base model updated with a pruned model's (retrained) weights.

        Document 001's two-step framework retrains the elite and searches on: the kept channels of
        every tensor get ``pruned_model``'s values, the removed ones keep the base model's. The
        new space has the same genes, groups, encoding, importance ranking (not recomputed, so a
        ratio genome keeps selecting the same channels), analytic costs and repair; so
        ``rebased.materialize(x_or_plan)`` computes exactly what ``pruned_model`` computes. This
        space and its model are not modified.

        Args:
            pruned_model: A model of the architecture ``self.materialize(x_or_plan)`` returns
                (e.g. that model after fine-tuning).
            x_or_plan: The genome or :class:`Plan` ``pruned_model`` was materialized from.

        Returns:
            A new :class:`ChannelSpace`.

        Raises:
            MopruneValueError: ``pruned_model`` does not have the shapes of that pruned model.
        """
        if not isinstance(pruned_model, nn.Module):
            raise invalid_value("pruned_model", "a torch.nn.Module", type(pruned_model).__name__)
        keep = self._kept_indices(x_or_plan)
        model = copy.deepcopy(self.model)
        pruned = dict(pruned_model.named_modules())
        with torch.no_grad():
            for mname, module in model.named_modules():
                source = pruned.get(mname)
                own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
                if own and (source is None or type(source) is not type(module)):
                    raise invalid_value("pruned_model", f"a model materialized by this space (with module {mname!r})",
                                        type(pruned_model).__name__)
                sides = keep.get(mname, {})
                for attr, target in own:
                    value = getattr(source, attr, None)
                    if target is None or value is None:
                        continue
                    index = _write_index(module, attr, target, sides.get("in"), sides.get("out"))
                    try:
                        if index is None:
                            target.copy_(value)
                        else:
                            target[index] = value.to(target.device, target.dtype)
                    except (RuntimeError, IndexError) as exc:
                        raise invalid_value("pruned_model", f"a model materialized by this space from x_or_plan "
                                            f"({mname}.{attr}: {exc})", tuple(value.shape)) from None
        new = copy.copy(self)
        new.model = model
        new._modules = dict(model.named_modules())
        return new

    # ------------------------------------------------------------------ analytic cost
    def cost(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """MACs and params (thop's counts, exactly) of each genome, without running the network.

        Args:
            X: A genome or an ``n x n_var`` population.

        Returns:
            Dict of float arrays of length ``n``: ``"macs"``, ``"params"``, ``"macs_ratio"``,
            ``"params_ratio"``, ``"sparsity"`` (fraction of the searched channels removed).
        """
        mask = self._masks(self.check_population(X))
        removed = (~mask).astype(np.float64)
        kept = np.repeat(self._dim_sizes[None, :], len(removed), axis=0)
        for d, genes, counts in self._dim_genes:
            kept[:, d] -= (removed[:, genes] * counts).sum(axis=1)
        macs, params = self._cost.evaluate(kept)
        return {"macs": macs, "params": params, "macs_ratio": macs / self.base_macs,
                "params_ratio": params / self.base_params, "sparsity": removed.sum(axis=1) / self.n_genes}

    def kept_channels(self, X: np.ndarray, layers: Iterable[str]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """Input and output sizes each genome leaves to Conv/Linear ``layers`` (no network run).

        Args:
            X: A genome or an ``n x n_var`` population.
            layers: Qualified names of Conv/Linear modules of the model.

        Returns:
            ``{name: (in_sizes, out_sizes)}``, int arrays of length ``n``: kept input channels
            (a Linear after a flatten: input features) and kept output channels.

        Raises:
            MopruneValueError: a name that is not a Conv/Linear module of the model.
        """
        mask = self._masks(self.check_population(X))
        out = {}
        for name in layers:
            module = self._modules.get(name)
            if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                raise invalid_value("layers", "qualified names of Conv/Linear modules of the model", name)
            sizes = []
            for side in ("in", "out"):
                full = side_size(module, side)
                entry = self._slices.get((name, side))
                removed = 0 if entry is None else (~mask[:, entry[1]]).sum(axis=1)
                sizes.append(np.full(len(mask), full, dtype=np.int64) - removed)
            out[name] = (sizes[0], sizes[1])
        return out

    def keep_order(self) -> Optional[np.ndarray]:
        """Binary encoding: each channel's importance rank within its group (0 = most important)."""
        return self._rank.copy() if self.encoding == "binary" else None

    def repair(self) -> Repair:
        """A pymoo ``Repair`` giving every group at least ``min_channels`` channels.

        Binary genomes get their most important missing channels switched on (deterministic);
        ratio genomes are clipped to ``[min_channels / size, 1]``. It holds only small arrays, not
        the model, so it pickles cheaply.
        """
        if self.encoding == "binary":
            return ChannelRepair(self._gene_slices, self._order, self._min_keep)
        low = self._min_keep / np.asarray(self.group_sizes, dtype=np.float64)
        return RatioRepair(low)


class ChannelRepair(Repair):
    """Switch on the most important channels of every group with fewer than ``min_keep``."""

    def __init__(self, slices, order, min_keep):
        super().__init__()
        self.slices, self.order, self.min_keep = slices, order, min_keep

    def _do(self, problem, X, **kwargs):
        return _repair_bits(np.asarray(X).astype(bool), self.slices, self.order, self.min_keep)


class RatioRepair(Repair):
    """Clip every ratio gene into ``[low, 1]``."""

    def __init__(self, low):
        super().__init__()
        self.low = low

    def _do(self, problem, X, **kwargs):
        return np.clip(np.asarray(X, dtype=np.float64), self.low, 1.0)


def _write_index(module, attr, tensor, keep_in, keep_out):
    """Index of ``tensor`` (``module.attr``) where :func:`slice_module` took its kept entries from.

    ``None`` when the tensor was not sliced (it is copied whole).
    """
    if keep_in is None and keep_out is None or tensor.dim() == 0:
        return None
    vector = attr != "weight" or isinstance(module, (nn.modules.batchnorm._BatchNorm,
                                                     nn.modules.instancenorm._InstanceNorm, nn.PReLU))
    if vector or is_depthwise(module):
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return None
        return None if keep_out is None else (keep_out,)
    if keep_out is not None and keep_in is not None:
        return (keep_out[:, None], keep_in[None, :])
    if keep_out is not None:
        return (keep_out,)
    return (slice(None), keep_in)


def _repair_bits(B, slices, order, min_keep):
    for sl, o, need_k in zip(slices, order, min_keep):
        counts = B[:, sl].sum(axis=1)
        rows = np.flatnonzero(counts < need_k)
        if rows.size == 0:
            continue
        cols = sl.start + o
        sub = B[np.ix_(rows, cols)]
        missing = ~sub
        need = (need_k - counts[rows])[:, None]
        sub |= missing & (np.cumsum(missing, axis=1) <= need)
        B[np.ix_(rows, cols)] = sub
    return B
