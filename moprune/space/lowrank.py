"""Low-rank spaces: SVD of Linear / 1x1 convolutions, Tucker-2 of k x k convolutions (document 004).

Genes are integers (pymoo integer variables, ``vtype = int``):

* a Linear layer or a 1x1 convolution with ``c`` inputs and ``f`` outputs has one gene
  ``l in 1..svd_levels`` (64 by default), the rank ``ceil(l * R / svd_levels)`` of its truncated
  SVD, ``R = min(c, f)`` (document 004, eq. 3: ``1 <- R/64, ..., 64 <- R``). It becomes
  ``Linear(c, r, bias=False) -> Linear(r, f)`` (1x1 convolutions: two 1x1 convolutions, the first
  with the original stride and padding), the singular values split evenly between the factors;
* a k x k convolution has two genes ``l_out, l_in in 1..tucker_levels`` (8 by default), the
  Tucker-2 ranks ``r_out = ceil(l_out * f / 8)`` and ``r_in = ceil(l_in * c / 8)`` (eq. 4). It
  becomes ``1x1 conv (c -> r_in) -> k x k conv (r_in -> r_out, original stride, padding,
  dilation) -> 1x1 conv (r_out -> f, original bias)``, by HOSVD on the two channel modes: the
  factors are the leading left singular vectors of the output- and input-mode unfoldings and
  the core is the weight projected on them (computed once, in float64, with ``torch.linalg``).

A layer whose factorised sequence is not strictly cheaper in MACs than the layer itself (e.g.
a rank close to full) stays as it is, so the full-rank genome (:meth:`Space.original`) is the
base model itself. ``only_if_cheaper=False`` decomposes every layer whatever its rank (then the
full-rank genome computes the base model's function up to float rounding, at a higher cost).
Layers that no genome could make cheaper are left out of the genome (:attr:`skipped`).

Tensor libraries (tensorly) were considered and not used: Tucker-2 by HOSVD is two SVDs and a
projection, the factors must be laid out as convolution weights anyway, and tensorly's
``partial_tucker`` would add a dependency with its own backend switching for no gain here.

Costs are exact: thop's count of the materialized model (a decomposed layer's count is the sum
of its factors' counts, thop's rules for Conv2d and Linear), computed with integer products.
``sparsity`` is the fraction of the model's parameters removed (``1 - params_ratio``).
"""

import copy
import hashlib
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from pymoo.core.repair import Repair
from torch import nn

from moprune.exceptions import MopruneError, invalid_value
from moprune.logging import get_logger
from moprune.space.base import Plan, Space, default_example_inputs, resolve_layers
from moprune.space.graph import as_tuple
from moprune.validation import check_bool, check_int

_LOG = get_logger("space")

__all__ = ["IntegerGenomes", "IntegerRepair", "LowRankSpace", "decomposable", "factorize", "rank_of"]


def rank_of(level, full, levels):
    """Eqs. 3 and 4: the rank encoded by ``level`` in ``1..levels`` for a full rank ``full``.

    ``ceil(level * full / levels)``: level ``levels`` is the full rank, level 1 is ``full / levels``
    rounded up (at least 1). Works elementwise on integer numpy arrays.
    """
    return -(-(np.asarray(level, dtype=np.int64) * np.asarray(full, dtype=np.int64)) // int(levels))


def decomposable(module: nn.Module) -> Optional[str]:
    """``"svd"`` for a Linear or 1x1 Conv2d, ``"tucker"`` for a k x k Conv2d, else ``None``.

    Grouped and depthwise convolutions, transposed ones and Conv1d/Conv3d are not decomposed.
    """
    if type(module) is nn.Linear:
        return "svd"
    if type(module) is nn.Conv2d and module.groups == 1:
        return "svd" if tuple(module.kernel_size) == (1, 1) else "tucker"
    return None


@dataclass
class _Layer:
    """One decomposable layer: its shapes, how often it runs (thop's counts) and its genes."""

    name: str
    kind: str  # "svd" or "tucker"
    in_size: int  # c (in_channels / in_features)
    out_size: int  # f
    kernel: int  # kh * kw (1 for Linear)
    p_in: int  # input positions over all calls (Tucker's first 1x1 conv runs on them)
    p_out: int  # output positions (conv) or rows (Linear) over all calls
    bias: bool
    levels: int
    genes: Optional[slice] = None

    @property
    def gene_names(self) -> List[str]:
        if self.kind == "svd":
            return [f"{self.name}:rank"]
        return [f"{self.name}:rank_out", f"{self.name}:rank_in"]

    def ranks(self, L, c, f):
        """Ranks (tuple of int arrays) of level rows ``L`` (``n x genes``) for kept sizes ``c, f``."""
        if self.kind == "svd":
            return (rank_of(L[:, 0], np.minimum(c, f), self.levels),)
        return rank_of(L[:, 0], f, self.levels), rank_of(L[:, 1], c, self.levels)

    def original_cost(self, c, f):
        """thop's MACs and params of the layer itself with ``c`` inputs and ``f`` outputs."""
        return self.p_out * self.kernel * c * f, self.kernel * c * f + self.bias * f

    def factored_cost(self, ranks, c, f):
        """thop's MACs and params of the factorised sequence."""
        if self.kind == "svd":
            (r,) = ranks
            return self.p_out * (c * r + r * f), c * r + r * f + self.bias * f
        r_out, r_in = ranks
        macs = self.p_in * c * r_in + self.p_out * self.kernel * r_in * r_out + self.p_out * r_out * f
        return macs, c * r_in + self.kernel * r_in * r_out + r_out * f + self.bias * f


# ---------------------------------------------------------------------------------- factors
def _decompose(weight: torch.Tensor, kind: str) -> Tuple[torch.Tensor, ...]:
    """Full factors of a weight, float64: SVD ``(A, B)`` with ``W = B @ A``; Tucker-2 ``(U_out, U_in, G)``."""
    w = weight.detach().to(torch.float64).cpu()
    f, c = w.shape[0], w.shape[1]
    if kind == "svd":
        return _svd_factors(w.reshape(f, c))
    u_out = torch.linalg.svd(w.reshape(f, -1), full_matrices=True)[0]
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(c, -1), full_matrices=True)[0]
    core = torch.einsum("oikl,oa,ib->abkl", w, u_out, u_in)
    return u_out, u_in, core


def _svd_factors(w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``B[:, :r] @ A[:r]`` the best rank-``r`` approximation of ``w`` for every ``r``.

    The singular vectors of the smaller side come from ``eigh`` of the Gram matrix (several times
    faster than a full SVD of a wide matrix: 0.4 s instead of 3.1 s for ``mnist_cnn``'s 1024 x
    3136 ``fc1`` on one core); the other factor is ``w`` projected on them, so ``B @ A = w`` up to
    rounding at full rank. Singular values are split evenly between the factors (``sqrt(s)``
    each), except for those below ``1e-7`` of the largest, left unscaled.
    """
    f, c = w.shape
    if f <= c:
        lam, u = torch.linalg.eigh(w @ w.T)
        u = u.flip(1)  # descending singular values
        a, b, left = u.T @ w, u, True  # rows of a: s_i v_i^T; columns of b: u_i
    else:
        lam, v = torch.linalg.eigh(w.T @ w)
        v = v.flip(1)
        a, b, left = v.T, w @ v, False  # rows of a: v_i^T; columns of b: s_i u_i
    s = lam.flip(0).clamp(min=0).sqrt()
    ok = s > 1e-7 * s[0] if s.numel() and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
    root = torch.where(ok, s, torch.ones_like(s)).sqrt()
    if left:
        return a / root[:, None], b * root[None, :]
    return a * root[:, None], b / root[None, :]


def _parameter(value: torch.Tensor, like: torch.Tensor) -> nn.Parameter:
    value = value.detach().to(dtype=like.dtype, device=like.device, copy=True).contiguous()
    return nn.Parameter(value, requires_grad=like.requires_grad)


def _new(cls, *args, like, **kwargs):
    """A module whose parameters are set by the caller: no random initialisation, no RNG draws."""
    return nn.utils.skip_init(cls, *args, device=like.device, dtype=like.dtype, **kwargs)


def _build(module: nn.Module, kind: str, factors, ranks) -> nn.Sequential:
    """The factorised sequence replacing ``module`` at ``ranks`` from its full ``factors``."""
    w = module.weight
    bias = module.bias
    if kind == "svd":
        (r,) = ranks
        a, b = factors[0][:r], factors[1][:, :r]
        if isinstance(module, nn.Linear):
            first = _new(nn.Linear, module.in_features, r, bias=False, like=w)
            second = _new(nn.Linear, r, module.out_features, bias=bias is not None, like=w)
            first.weight, second.weight = _parameter(a, w), _parameter(b, w)
        else:
            first = _new(nn.Conv2d, module.in_channels, r, 1, stride=module.stride, padding=module.padding,
                         dilation=module.dilation, bias=False, padding_mode=module.padding_mode, like=w)
            second = _new(nn.Conv2d, r, module.out_channels, 1, bias=bias is not None, like=w)
            first.weight, second.weight = _parameter(a[:, :, None, None], w), _parameter(b[:, :, None, None], w)
        layers = [first, second]
    else:
        r_out, r_in = ranks
        u_out, u_in, core = factors
        first = _new(nn.Conv2d, module.in_channels, r_in, 1, bias=False, like=w)
        middle = _new(nn.Conv2d, r_in, r_out, module.kernel_size, stride=module.stride, padding=module.padding,
                      dilation=module.dilation, bias=False, padding_mode=module.padding_mode, like=w)
        last = _new(nn.Conv2d, r_out, module.out_channels, 1, bias=bias is not None, like=w)
        first.weight = _parameter(u_in[:, :r_in].T[:, :, None, None], w)
        middle.weight = _parameter(core[:r_out, :r_in], w)
        last.weight = _parameter(u_out[:, :r_out][:, :, None, None], w)
        layers = [first, middle, last]
    if bias is not None:
        layers[-1].bias = _parameter(bias.detach(), bias)
    seq = nn.Sequential(*layers)
    return seq.train(module.training)


def factorize(module: nn.Module, ranks: Tuple[int, ...]) -> nn.Sequential:
    """Decompose one layer from its current weights: truncated SVD or Tucker-2 (HOSVD).

    Args:
        module: A Linear or Conv2d (``groups=1``).
        ranks: ``(r,)`` for SVD (Linear, 1x1 conv), ``(r_out, r_in)`` for Tucker-2 (k x k conv).

    Returns:
        The factorised ``nn.Sequential`` (the module is not modified).

    Raises:
        MopruneValueError: the module cannot be decomposed or the ranks do not fit it.
    """
    kind = decomposable(module)
    if kind is None:
        raise invalid_value("module", "a Linear or a Conv2d with groups=1", type(module).__name__)
    ranks = tuple(int(r) for r in ranks)
    w = module.weight
    full = (min(w.shape[0], w.shape[1]),) if kind == "svd" else (w.shape[0], w.shape[1])
    if len(ranks) != len(full) or any(not 1 <= r <= m for r, m in zip(ranks, full)):
        raise invalid_value("ranks", f"{len(full)} ranks within 1..{full} for this {kind} layer", ranks)
    with torch.no_grad():
        return _build(module, kind, _decompose(w, kind), ranks)


# ---------------------------------------------------------------------------------- integer genomes
class IntegerRepair(Repair):
    """Round genes to integers and clip them into ``[xl, xu]``."""

    def __init__(self, xl, xu):
        super().__init__()
        self.xl = np.asarray(xl, dtype=np.int64)
        self.xu = np.asarray(xu, dtype=np.int64)

    def _do(self, problem, X, **kwargs):
        return np.clip(np.rint(np.asarray(X, dtype=np.float64)), self.xl, self.xu).astype(np.int64)


class IntegerGenomes:
    """Genome handling shared by the integer-encoded spaces (mixed into a :class:`Space`)."""

    vtype = int

    def original(self) -> np.ndarray:
        """The full-rank (unchanged) genome: every gene at its upper bound."""
        return self.xu.astype(np.int64).copy()

    def check_population(self, X: np.ndarray, argname: str = "X") -> np.ndarray:
        """Validate a genome or an ``n x n_var`` population of integers within ``[xl, xu]``.

        Returns:
            An ``int64`` array ``n x n_var``.

        Raises:
            MopruneValueError: naming ``argname``, the expected shape or values, and what came.
        """
        X = self._as_population(X, argname)
        if X.dtype == bool or not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
            raise invalid_value(argname, f"an integer genome of length {self.n_var}", f"dtype {X.dtype}")
        if not np.isfinite(X).all() or (np.rint(X) != X).any():
            raise invalid_value(argname, f"an integer genome of length {self.n_var} (integer values)",
                                "non-integer values")
        X = X.astype(np.int64)
        if (X < self.xl).any() or (X > self.xu).any():
            bad = int(np.flatnonzero(((X < self.xl) | (X > self.xu)).any(axis=0))[0])
            raise invalid_value(argname, f"integer genes within their bounds (gene {bad}: "
                                f"{int(self.xl[bad])}..{int(self.xu[bad])})",
                                f"values in [{X[:, bad].min()}, {X[:, bad].max()}] at gene {bad}")
        return X

    def group_ratios(self, X: np.ndarray) -> np.ndarray:
        """Per group, the mean of its genes' ``level / max level`` (1 = full rank / all kept)."""
        X = self.check_population(X).astype(np.float64) / self.xu
        return np.stack([X[:, sl].mean(axis=1) for sl in self.group_slices], axis=1)

    def genomes_from_ratios(self, R: np.ndarray) -> np.ndarray:
        """Genomes whose genes are ``ceil(R[i, g] * max level)`` for every gene of group ``g``."""
        R = np.asarray(R, dtype=np.float64)
        if R.ndim == 1:
            R = R[None, :]
        n_groups = len(self.group_slices)
        if R.ndim != 2 or R.shape[1] != n_groups or not np.isfinite(R).all() or R.min() < 0 or R.max() > 1:
            raise invalid_value("R", f"an n x {n_groups} array of ratios in [0, 1]", f"array of shape {R.shape}")
        X = np.empty((len(R), self.n_var), dtype=np.int64)
        for g, sl in enumerate(self.group_slices):
            X[:, sl] = np.ceil(R[:, g:g + 1] * self.xu[sl] - 1e-9)
        return np.clip(X, self.xl, self.xu).astype(np.int64)

    def repair(self) -> Repair:
        """A pymoo ``Repair`` that rounds genes to integers and clips them to the bounds."""
        return IntegerRepair(self.xl, self.xu)


def _profile(model, example_inputs, names):
    """Per layer name, ``(p_in, p_out)`` summed over calls; and thop's ``(macs, params)`` of the model."""
    import thop

    work = copy.deepcopy(model).eval()
    counts = {n: [0, 0] for n in names}
    handles = []
    for n in names:
        def hook(module, inputs, out, n=n):
            x = inputs[0]
            if isinstance(module, nn.Linear):
                counts[n][0] += x.numel() // x.shape[-1]
                counts[n][1] += out.numel() // out.shape[-1]
            else:
                counts[n][0] += x.numel() // x.shape[1]
                counts[n][1] += out.numel() // out.shape[1]
        handles.append(work.get_submodule(n).register_forward_hook(hook))
    with torch.no_grad():
        work(*as_tuple(example_inputs))
    for h in handles:
        h.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, params = thop.profile(copy.deepcopy(model).eval(), inputs=as_tuple(example_inputs), verbose=False)
    return counts, int(macs), int(params)


def _find_layers(model, layers, ignored_layers):
    """Decomposable layers to search, in module order, and ``{name: why}`` for those left alone."""
    ignored = set(resolve_layers(model, ignored_layers or [], "ignored_layers"))
    if layers is not None:
        chosen = resolve_layers(model, layers, "layers")
        for n in chosen:
            module = model.get_submodule(n)
            if decomposable(module) is None:
                raise invalid_value("layers", "Linear or Conv2d (groups=1) layers of the model",
                                    f"{n} ({type(module).__name__}, groups={getattr(module, 'groups', None)})")
        wanted = set(chosen)
    else:
        wanted = None
    out, skipped = [], {}
    for n, m in model.named_modules():
        if wanted is not None and n not in wanted:
            continue
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and decomposable(m) is None:
            skipped[n] = "grouped, depthwise, transposed or not 2-D: left alone"
        elif decomposable(m) is not None:
            if n in ignored:
                skipped[n] = "in ignored_layers"
            else:
                out.append(n)
    return out, skipped


class LowRankSpace(IntegerGenomes, Space):
    """The rank of every Linear / Conv2d layer: SVD or Tucker-2 (document 004, eqs. 3-4).

    See the module docstring for the encoding and the decompositions.

    Args:
        model: The trained base model; it is never modified.
        example_inputs: A tensor (or tuple) the model accepts, batch size 1 (MACs are counted for
            it). ``None``: zeros of shape ``(1, *model.input_shape)``.
        layers: Modules or qualified names to decompose (``None``: every Linear and Conv2d with
            ``groups=1``, classifier included).
        ignored_layers: Modules or names never decomposed.
        svd_levels: Levels of an SVD rank gene (document 004: 64).
        tucker_levels: Levels of a Tucker-2 rank gene (document 004: 8).
        only_if_cheaper: Keep a layer as it is when its factorisation has at least its MACs.

    Attributes:
        layers: One :class:`_Layer` record per searched layer, in genome order.
        group_names, group_slices: The layer names and their genes (1 for SVD, 2 for Tucker-2).
        gene_names: ``"<layer>:rank"``, ``"<layer>:rank_out"``, ``"<layer>:rank_in"``.
        skipped: ``{layer name: reason}`` of the Linear/conv layers left out of the genome.

    Raises:
        MopruneValueError: a bad argument (e.g. a grouped convolution in ``layers``).
        MopruneError: no layer left to decompose.
    """

    encoding = "rank"

    def __init__(self, model: nn.Module, example_inputs: Optional[torch.Tensor] = None, *,
                 layers: Optional[Iterable[Union[str, nn.Module]]] = None,
                 ignored_layers: Optional[Iterable[Union[str, nn.Module]]] = None, svd_levels: int = 64,
                 tucker_levels: int = 8, only_if_cheaper: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise invalid_value("model", "a torch.nn.Module", type(model).__name__)
        self.svd_levels = check_int("svd_levels", svd_levels, low=1)
        self.tucker_levels = check_int("tucker_levels", tucker_levels, low=1)
        self.only_if_cheaper = check_bool("only_if_cheaper", only_if_cheaper)
        example_inputs = default_example_inputs(model, example_inputs)
        self.model = model
        names, self.skipped = _find_layers(model, layers, ignored_layers)
        counts, self.base_macs, self.base_params = _profile(model, example_inputs, names)
        self.layers = self._layout(names, counts)
        self._factor_cache = None
        _LOG.debug("LowRankSpace: %d layers, %d genes", len(self.layers), self.n_var)

    def _layout(self, names, counts):
        records, offset = [], 0
        for n in names:
            m = self.model.get_submodule(n)
            kind = decomposable(m)
            if not counts[n][1]:
                self.skipped[n] = "not called by the forward pass on example_inputs"
                continue
            kernel = 1 if isinstance(m, nn.Linear) else int(np.prod(m.kernel_size))
            c, f = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
            layer = _Layer(n, kind, c, f, kernel, counts[n][0], counts[n][1], m.bias is not None,
                           self.svd_levels if kind == "svd" else self.tucker_levels)
            ones = np.ones((1, 1 if kind == "svd" else 2), dtype=np.int64)
            if self.only_if_cheaper and layer.factored_cost(layer.ranks(ones, c, f), c, f)[0][0] \
                    >= layer.original_cost(c, f)[0]:
                self.skipped[n] = "no rank makes it cheaper in MACs"
                continue
            width = 1 if kind == "svd" else 2
            layer.genes = slice(offset, offset + width)
            offset += width
            records.append(layer)
        if not records:
            raise MopruneError("no layer to decompose (check layers= / ignored_layers=; skipped: "
                               f"{self.skipped})")
        self.n_var = offset
        self.group_names = [r.name for r in records]
        self.group_slices = [r.genes for r in records]
        self.gene_names = [g for r in records for g in r.gene_names]
        self.xl = np.ones(self.n_var, dtype=np.int64)
        self.xu = np.concatenate([np.full(r.genes.stop - r.genes.start, r.levels) for r in records]).astype(np.int64)
        return records

    @property
    def _factors(self):
        """Full SVD / HOSVD factors of every searched layer (computed once, on first use)."""
        if self._factor_cache is None:
            self._factor_cache = [_decompose(self.model.get_submodule(layer.name).weight, layer.kind)
                                  for layer in self.layers]
        return self._factor_cache

    # ------------------------------------------------------------------ ranks of a population
    def layer_ranks(self, X: np.ndarray, widths: Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]] = None
                    ) -> List[Tuple[Tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]]:
        """Per layer: ranks, whether it is decomposed, and the cost change, for each genome.

        Args:
            X: A validated ``n x n_var`` int population.
            widths: ``{layer: (c, f)}`` kept input / output sizes per genome (channel pruning
                first, see :class:`moprune.space.LowRankChannelSpace`); ``None``: the base sizes.

        Returns:
            A list, per layer, of ``(ranks, decomposed, d_macs, d_params)`` arrays of length ``n``.
        """
        out = []
        for layer in self.layers:
            if widths is None:
                c = np.full(len(X), layer.in_size, dtype=np.int64)
                f = np.full(len(X), layer.out_size, dtype=np.int64)
            else:
                c, f = (np.asarray(v, dtype=np.int64) for v in widths[layer.name])
            ranks = layer.ranks(X[:, layer.genes], c, f)
            macs0, params0 = layer.original_cost(c, f)
            macs1, params1 = layer.factored_cost(ranks, c, f)
            decomposed = macs1 < macs0 if self.only_if_cheaper else np.ones(len(X), dtype=bool)
            out.append((ranks, decomposed, np.where(decomposed, macs1 - macs0, 0),
                        np.where(decomposed, params1 - params0, 0)))
        return out

    def decode(self, x: np.ndarray) -> Plan:
        """Genome -> :class:`Plan`: per layer ``(name, ranks)``, ``ranks = ()`` when kept as is.

        ``summary`` holds ``rank/<layer>`` (SVD) or ``rank_out/<layer>`` and ``rank_in/<layer>``
        (Tucker-2): the ranks used, 0 for a layer kept as is.
        """
        X = self.check_population(self.check_genome(x), "x")
        kept, summary = _rank_kept(self.layers, self.layer_ranks(X))
        key = hashlib.blake2b(b"lowrank" + repr(kept).encode(), digest_size=8).hexdigest()
        return Plan(kind="lowrank", kept=kept, key=key, summary=summary)

    def materialize(self, x_or_plan: Union[np.ndarray, Plan]) -> nn.Module:
        """Genome or plan -> a copy of the model whose decomposed layers are factorised (eval mode)."""
        plan = x_or_plan if isinstance(x_or_plan, Plan) else self.decode(x_or_plan)
        if plan.kind != "lowrank" or [n for n, _ in plan.kept] != self.group_names:
            raise invalid_value("x_or_plan", "a genome or a lowrank plan decoded by this space", plan.key)
        memo = {}
        with torch.no_grad():
            for layer, factors, (_, ranks) in zip(self.layers, self._factors, plan.kept):
                if ranks:
                    module = self.model.get_submodule(layer.name)
                    memo[id(module)] = _build(module, layer.kind, factors, ranks)
        return copy.deepcopy(self.model, memo).eval()

    def cost(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """MACs and params (thop's counts of the materialized model, exactly) of each genome.

        Returns:
            Dict of float arrays: ``"macs"``, ``"params"``, ``"macs_ratio"``, ``"params_ratio"``,
            ``"sparsity"`` (fraction of the parameters removed).
        """
        X = self.check_population(X)
        macs = np.full(len(X), self.base_macs, dtype=np.int64)
        params = np.full(len(X), self.base_params, dtype=np.int64)
        for _, _, d_macs, d_params in self.layer_ranks(X):
            macs = macs + d_macs
            params = params + d_params
        return _cost_dict(macs, params, self.base_macs, self.base_params)


def _cost_dict(macs, params, base_macs, base_params):
    macs = macs.astype(np.float64)
    params = params.astype(np.float64)
    return {"macs": macs, "params": params, "macs_ratio": macs / base_macs, "params_ratio": params / base_params,
            "sparsity": 1.0 - params / base_params}


def _rank_kept(layers, per_layer):
    """``(kept, summary)`` of the first genome of :meth:`LowRankSpace.layer_ranks`'s output."""
    summary, kept = {}, []
    for layer, (ranks, decomposed, _, _) in zip(layers, per_layer):
        r = tuple(int(v[0]) for v in ranks) if decomposed[0] else ()
        kept.append((layer.name, r))
        if layer.kind == "svd":
            summary[f"rank/{layer.name}"] = r[0] if r else 0
        else:
            summary[f"rank_out/{layer.name}"] = r[0] if r else 0
            summary[f"rank_in/{layer.name}"] = r[1] if r else 0
    return tuple(kept), summary
