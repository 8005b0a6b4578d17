"""Document 004's "D + Ps": one genome that prunes channels and decomposes what is left.

How the two interact: **channel pruning first, then decomposition of what is left.** The genome
is ``[channel levels | rank levels]``, all integers:

* one gene per channel group of a :class:`moprune.space.ChannelSpace` (ratio encoding, channels
  ranked by importance), ``l in 1..channel_levels``: the group keeps
  ``ceil(l / channel_levels * size)`` of its most important channels (at least ``min_channels``);
* the rank genes of a :class:`moprune.space.LowRankSpace` (eqs. 3-4), read relative to the
  *pruned* layer: a Linear left with ``c'`` inputs and ``f'`` outputs gets rank
  ``ceil(l * min(c', f') / 64)``, a k x k convolution ranks ``ceil(l_out * f' / 8)`` and
  ``ceil(l_in * c' / 8)``.

:meth:`LowRankChannelSpace.materialize` slices the base model's tensors (channel pruning, with
the dependency graph's coupling: residual additions, BatchNorm, flatten -> Linear), then
replaces each layer to decompose by its truncated SVD / Tucker-2 computed from its *pruned*
weights; a layer whose factorisation would not be strictly cheaper in MACs than the pruned layer
stays as it is. Costs are the channel-pruned model's (exact, see ``ChannelSpace``) plus, per
decomposed layer, the factorised sequence's count minus the pruned layer's: thop's count of the
materialized model, exactly.

Document 004 runs "D + Ps" in the other order (decompose, then prune channels). Pruning first
keeps the channel groups, importance ranking and coupling of the base model (a channel removed
is removed from every coupled layer, as in ``ChannelSpace``), and pruning the inner rank
dimension of a factorised layer would only be a smaller rank, which the rank genes already
encode.
"""

import hashlib
from typing import Any, Dict, Iterable, Optional, Union

import numpy as np
import torch
from torch import nn

from moprune.exceptions import invalid_value
from moprune.space.base import Plan, Space, default_example_inputs
from moprune.space.channels import ChannelSpace
from moprune.space.lowrank import IntegerGenomes, LowRankSpace, _cost_dict, _rank_kept, factorize
from moprune.validation import check_int

__all__ = ["LowRankChannelSpace"]


class LowRankChannelSpace(IntegerGenomes, Space):
    """Channel pruning and low-rank decomposition in one integer genome (document 004, "D + Ps").

    See the module docstring for the encoding and the order of the two compressions.

    Args:
        model: The trained base model; it is never modified.
        example_inputs: A tensor the model accepts (batch size 1). ``None``: zeros of shape
            ``(1, *model.input_shape)``.
        layers: Modules or names searched by both parts (``ChannelSpace``: groups that contain
            one of them; ``LowRankSpace``: layers to decompose). ``None``: all.
        ignored_layers: Modules or names neither pruned nor decomposed.
        channel_levels: Levels of a channel gene (keep fraction ``l / channel_levels``).
        min_channels: Channels each group keeps at least.
        importance, importance_data, importance_batches, generator: Channel ranking, as in
            :class:`moprune.space.ChannelSpace`.
        svd_levels, tucker_levels, only_if_cheaper: As in :class:`moprune.space.LowRankSpace`.

    Attributes:
        channels: The inner :class:`ChannelSpace` (ratio encoding).
        lowrank: The inner :class:`LowRankSpace` (its layers, on the base model).
        n_channel_genes: Length of the channel part of the genome (it comes first).
        group_names, group_slices: ``"channels:<group>"`` then ``"ranks:<layer>"`` groups.
        gene_names: ``"channels:<group>"`` then the rank genes' names.
        prunes_channels: ``True``: BatchNorm statistics must be re-estimated for candidates.
    """

    encoding = "channels+rank"
    prunes_channels = True

    def __init__(self, model: nn.Module, example_inputs: Optional[torch.Tensor] = None, *,
                 layers: Optional[Iterable[Union[str, nn.Module]]] = None,
                 ignored_layers: Optional[Iterable[Union[str, nn.Module]]] = None, channel_levels: int = 64,
                 min_channels: int = 1, importance: str = "l1", importance_data: Any = None,
                 importance_batches: int = 4, generator: Union[None, int, torch.Generator] = None,
                 svd_levels: int = 64, tucker_levels: int = 8, only_if_cheaper: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise invalid_value("model", "a torch.nn.Module", type(model).__name__)
        self.channel_levels = check_int("channel_levels", channel_levels, low=1)
        example_inputs = default_example_inputs(model, example_inputs)
        layers = None if layers is None else list(layers)
        ignored_layers = list(ignored_layers or [])
        self.model = model
        self.channels = ChannelSpace(model, example_inputs, encoding="ratio", importance=importance, layers=layers,
                                     ignored_layers=ignored_layers, min_channels=min_channels,
                                     importance_data=importance_data, importance_batches=importance_batches,
                                     generator=generator)
        self.lowrank = LowRankSpace(model, example_inputs, layers=layers, ignored_layers=ignored_layers,
                                    svd_levels=svd_levels, tucker_levels=tucker_levels,
                                    only_if_cheaper=only_if_cheaper)
        self.base_macs, self.base_params = self.lowrank.base_macs, self.lowrank.base_params
        n_ch = self.n_channel_genes = self.channels.n_var
        self.n_var = n_ch + self.lowrank.n_var
        self.group_names = [f"channels:{g}" for g in self.channels.group_names] + \
                           [f"ranks:{n}" for n in self.lowrank.group_names]
        self.group_slices = [slice(i, i + 1) for i in range(n_ch)] + \
                            [slice(sl.start + n_ch, sl.stop + n_ch) for sl in self.lowrank.group_slices]
        self.gene_names = [f"channels:{g}" for g in self.channels.group_names] + list(self.lowrank.gene_names)
        self.xl = np.concatenate([np.ones(n_ch, dtype=np.int64), self.lowrank.xl])
        self.xu = np.concatenate([np.full(n_ch, self.channel_levels, dtype=np.int64), self.lowrank.xu])
        self._names = [layer.name for layer in self.lowrank.layers]

    def _split(self, X):
        """Validated population -> (ratio genomes of the channel space, rank levels)."""
        n_ch = self.n_channel_genes
        return X[:, :n_ch] / float(self.channel_levels), X[:, n_ch:]

    def _per_layer(self, ratios, levels):
        widths = self.channels.kept_channels(ratios, self._names)
        return self.lowrank.layer_ranks(levels, widths)

    def decode(self, x: np.ndarray) -> Plan:
        """Genome -> :class:`Plan` with ``kept = (("channels", <channel plan kept>), ("ranks", <ranks>))``.

        ``summary`` holds the channel plan's ``kept/<group>`` and the ranks' ``rank.../<layer>``
        (0 for a layer kept as is).
        """
        X = self.check_population(self.check_genome(x), "x")
        ratios, levels = self._split(X)
        channel_plan = self.channels.decode(ratios[0])
        ranks, summary = _rank_kept(self.lowrank.layers, self._per_layer(ratios, levels))
        key = hashlib.blake2b(b"channels+rank" + channel_plan.key.encode() + repr(ranks).encode(),
                              digest_size=8).hexdigest()
        return Plan(kind="channels+lowrank", kept=(("channels", channel_plan.kept), ("ranks", ranks)), key=key,
                    summary={**channel_plan.summary, **summary})

    def materialize(self, x_or_plan: Union[np.ndarray, Plan]) -> nn.Module:
        """Genome or plan -> the channel-pruned model with its chosen layers factorised (eval mode)."""
        plan = x_or_plan if isinstance(x_or_plan, Plan) else self.decode(x_or_plan)
        if plan.kind != "channels+lowrank" or len(plan.kept) != 2:
            raise invalid_value("x_or_plan", "a genome or a channels+lowrank plan decoded by this space", plan.key)
        (_, channel_kept), (_, ranks) = plan.kept
        pruned = self.channels.materialize(Plan(kind="channels", kept=channel_kept, key=""))
        with torch.no_grad():
            for name, r in ranks:
                if r:
                    parent, _, child = name.rpartition(".")
                    owner = pruned.get_submodule(parent) if parent else pruned
                    setattr(owner, child, factorize(pruned.get_submodule(name), r))
        return pruned.eval()

    def cost(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """MACs and params (thop's counts of the materialized model, exactly) of each genome.

        Returns:
            Dict of float arrays: ``"macs"``, ``"params"``, ``"macs_ratio"``, ``"params_ratio"``,
            ``"sparsity"`` (fraction of the parameters removed).
        """
        X = self.check_population(X)
        ratios, levels = self._split(X)
        base = self.channels.cost(ratios)
        macs = np.rint(base["macs"]).astype(np.int64)
        params = np.rint(base["params"]).astype(np.int64)
        for _, _, d_macs, d_params in self._per_layer(ratios, levels):
            macs = macs + d_macs
            params = params + d_params
        return _cost_dict(macs, params, self.base_macs, self.base_params)
