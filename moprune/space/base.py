"""The interface every pruning space implements.

A space owns the mapping genome -> plan -> smaller model and the analytic cost of a plan. The
search core (problem, evaluator, operators) only talks to this interface, so new spaces
(low-rank, combined) plug in without touching it.
"""

import abc
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import numpy as np
from pymoo.core.repair import Repair
from torch import nn

from moprune.exceptions import invalid_value


@dataclass(frozen=True)
class Plan:
    """What a genome means: a hashable description of one pruned model.

    Attributes:
        kind: ``"channels"`` or ``"weights"`` (or a future space's name).
        kept: For channel spaces, a tuple ``(group_name, kept_indices_tuple)`` per group; for
            weight spaces, ``(layer_name, sparsity)`` per layer (ratio encoding) or
            ``(layer_name, mask_bytes_digest)`` (mask encoding).
        key: A short string that identifies the plan; equal plans have equal keys. The
            evaluation cache is keyed by it.
        summary: Per-group / per-layer numbers for result tables, e.g. ``{"kept/conv1": 12}``
            or ``{"sparsity/conv1": 0.5}``.
    """

    kind: str
    kept: tuple
    key: str
    summary: dict = field(default_factory=dict, compare=False, hash=False)


def default_example_inputs(model, example_inputs=None):
    """``example_inputs`` if given, else one zero image of the model's ``input_shape`` attribute.

    Raises:
        MopruneValueError: neither is available.
    """
    if example_inputs is not None:
        return example_inputs
    if not hasattr(model, "input_shape"):
        raise invalid_value("example_inputs", "a tensor when the model has no input_shape", None)
    import torch

    return torch.zeros(1, *model.input_shape)


class Space(abc.ABC):
    """Base class of pruning spaces.

    Attributes:
        n_var: Genome length.
        xl, xu: Lower and upper bounds (float arrays of length ``n_var``).
        vtype: ``bool`` for binary genomes, ``float`` for real-valued ones.
        encoding: The encoding name (``"binary"``, ``"ratio"``, ``"mask"``).
        model: The base model (never modified).
        base_macs, base_params: thop counts of the base model.
        group_names: Names of the gene groups (layers or coupled channel groups), in genome order.
        group_slices: For each group, the ``slice`` of the genome it owns.
    """

    n_var: int
    xl: np.ndarray
    xu: np.ndarray
    vtype: type
    encoding: str
    model: object
    base_macs: int
    base_params: int
    group_names: list
    group_slices: list

    @abc.abstractmethod
    def decode(self, x: np.ndarray) -> Plan:
        """Genome (1-D array of length ``n_var``) -> :class:`Plan`."""

    @abc.abstractmethod
    def materialize(self, x_or_plan: Union[np.ndarray, Plan]) -> nn.Module:
        """Genome or plan -> a new pruned ``nn.Module`` (eval mode); the base model is untouched."""

    @abc.abstractmethod
    def cost(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Analytic cost of a population ``X`` (``n x n_var``) without running the network.

        Returns:
            A dict of float arrays of length ``n``: ``"macs"``, ``"params"``, ``"macs_ratio"``,
            ``"params_ratio"`` and ``"sparsity"`` (fraction of prunable units removed).
        """

    @abc.abstractmethod
    def repair(self) -> Repair:
        """A pymoo ``Repair`` that makes any genome valid (e.g. at least ``min_channels`` per group)."""

    def original(self) -> np.ndarray:
        """The genome of the unpruned model (all ones / all kept)."""
        return np.ones(self.n_var, dtype=self.vtype) if self.vtype is bool else self.xu.astype(float).copy()

    def keep_order(self) -> Optional[np.ndarray]:
        """Per gene of a binary genome, its place in its group's keep order (0 = kept first).

        Importance-aware operators use it to prune the least important units of a group first
        and to restore the most important ones first. Real-valued encodings have one gene per
        group and no order (``None``). This default keeps units in index order; spaces that
        rank their units by importance override it.
        """
        if self.vtype is not bool:
            return None
        return np.concatenate([np.arange(sl.stop - sl.start) for sl in self.group_slices])

    def group_ratios(self, X: np.ndarray) -> np.ndarray:
        """Fraction of each group's units that genomes keep, ``n x len(group_names)``.

        Binary genomes: the mean of each group's bits; real-valued genomes: the genes themselves
        (one keep ratio per group).
        """
        X = self.check_population(X)
        return np.stack([X[:, sl].mean(axis=1) for sl in self.group_slices], axis=1)

    def genomes_from_ratios(self, R: np.ndarray) -> np.ndarray:
        """Genomes keeping fraction ``R[i, g]`` of every group ``g``, most important units first.

        Args:
            R: ``n x len(group_names)`` keep ratios in [0, 1] (a 1-D array is one genome).

        Returns:
            An ``n x n_var`` population (bool for binary encodings, float otherwise).

        Raises:
            MopruneValueError: ``R`` has the wrong shape or values outside [0, 1].
        """
        R = np.asarray(R, dtype=np.float64)
        if R.ndim == 1:
            R = R[None, :]
        n_groups = len(self.group_slices)
        if R.ndim != 2 or R.shape[1] != n_groups or not np.isfinite(R).all() or R.min() < 0 or R.max() > 1:
            raise invalid_value("R", f"an n x {n_groups} array of keep ratios in [0, 1]",
                                f"array of shape {R.shape}")
        if self.vtype is not bool:
            X = np.empty((len(R), self.n_var))
            for g, sl in enumerate(self.group_slices):
                X[:, sl] = R[:, g:g + 1]
            return X
        order = self.keep_order()
        X = np.zeros((len(R), self.n_var), dtype=bool)
        for g, sl in enumerate(self.group_slices):
            size = sl.stop - sl.start
            keep = np.ceil(R[:, g] * size - 1e-9).astype(np.int64)
            X[:, sl] = order[None, sl] < keep[:, None]
        return X

    def check_genome(self, x: np.ndarray) -> np.ndarray:
        """Return ``x`` as a 1-D numpy array, or raise naming the expected shape."""
        x = np.asarray(x)
        if x.ndim != 1 or x.shape[0] != self.n_var:
            raise invalid_value("x", f"a 1-D genome of length {self.n_var}", f"array of shape {x.shape}")
        return x

    def _as_population(self, X, argname):
        """``X`` as a 2-D array (one genome becomes a population of one), or raise naming the shape."""
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_var:
            raise invalid_value(argname, f"a genome of length {self.n_var} (or an n x {self.n_var} population)",
                                f"array of shape {X.shape}")
        return X

    def check_population(self, X: np.ndarray, argname: str = "X") -> np.ndarray:
        """Validate a genome or an ``n x n_var`` population and return it as a 2-D array.

        Binary spaces (``vtype is bool``) get a bool array and accept only 0/1 values; real
        spaces get float64 values in [0, 1].

        Raises:
            MopruneValueError: naming ``argname``, the expected shape or values, and what came.
        """
        X = self._as_population(X, argname)
        if X.dtype != bool and not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
            raise invalid_value(argname, f"a numeric ({self.vtype.__name__}) genome of length {self.n_var}",
                                f"dtype {X.dtype}")
        if self.vtype is bool:
            if X.dtype != bool and not np.isin(X, (0, 1)).all():
                raise invalid_value(argname, f"a {self.encoding} genome of length {self.n_var} (values 0/1)",
                                    "other values")
            return X.astype(bool)
        X = X.astype(np.float64)
        if not np.isfinite(X).all() or X.min() < -1e-9 or X.max() > 1 + 1e-9:
            raise invalid_value(argname, f"a ratio genome of length {self.n_var} with values in [0, 1]",
                                f"values in [{X.min()}, {X.max()}]")
        return X


def resolve_layers(model: nn.Module, items, argname: str) -> list:
    """Qualified names of ``items`` (modules of ``model`` or their names), in the given order.

    Raises:
        MopruneValueError: an item is neither a module of ``model`` nor one of its names; the
            message names ``argname``.
    """
    names = {m: n for n, m in model.named_modules()}
    known = set(names.values())
    out = []
    for item in items:
        if isinstance(item, nn.Module) and item in names:
            out.append(names[item])
        elif isinstance(item, str) and item in known:
            out.append(item)
        else:
            raise invalid_value(argname, "modules of the model or their qualified names", item)
    return out
