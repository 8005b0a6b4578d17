"""Analytic MACs and parameter counts that reproduce thop 0.1.1 exactly on pruned models.

thop counts, per call of a leaf module whose exact type it knows (batch size included):

* ``Conv{1,2,3}d``: ``numel(output) * (in_channels // groups) * prod(kernel)`` (bias not counted);
* ``Linear``: ``in_features * numel(output)``;
* ``BatchNorm{1,2,3}d`` / ``InstanceNorm{1,2,3}d``: ``2 * numel(input)``, doubled when affine;
* ``AvgPool``: ``numel(output)``; ``AdaptiveAvgPool``: ``int((prod(in/out spatial) + 1) * numel(output))``;
* ``PReLU`` (eval mode): ``numel(input)``;
* ReLU, MaxPool, Dropout, ...: zero.

Parameters are counted once per module, only for modules thop has a rule for. After channel
pruning each count is a product of at most two channel counts (input side, output side), so the
cost of a whole population is a few vectorised numpy products over the kept-channel counts.
"""

import numpy as np
from torch import nn

from moprune.exceptions import MopruneError

_ZERO_OPS = (
    nn.ZeroPad2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.PixelShuffle,
)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVGPOOL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def _prod(values):
    out = 1
    for v in values:
        out *= int(v)
    return out


class CostModel:
    """MACs and params as sums of products of kept-channel counts.

    A *dim* is one channel axis of one module (e.g. the input side of ``fc1``). Each term is
    ``coef * K[:, a] * K[:, b]`` where ``K`` holds the kept count of every dim and the extra
    last column is all ones, so a linear term uses ``b = ONE``.

    Args:
        n_dims: Number of channel dims.
    """

    def __init__(self, n_dims):
        self.n_dims = n_dims
        self.ONE = n_dims  # index of the all-ones column
        self.const_macs = 0
        self.const_params = 0
        self._macs, self._params, self._floor_macs = [], [], []

    def add_macs(self, coef, a, b=None):
        """Add ``coef * K[a] * K[b]`` MACs (``b=None``: linear in ``K[a]``)."""
        self._macs.append((coef, a, self.ONE if b is None else b))

    def add_params(self, coef, a, b=None):
        """Add ``coef * K[a] * K[b]`` parameters."""
        self._params.append((coef, a, self.ONE if b is None else b))

    def add_floor_macs(self, coef, a):
        """Add ``floor(coef * K[a])`` MACs, for thop's ``int(...)`` of a non-integral product."""
        self._floor_macs.append((coef, a))

    def freeze(self):
        """Turn the term lists into arrays; call once after the last ``add_*``."""
        def arrays(terms):
            if not terms:
                return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            c, a, b = zip(*terms)
            return np.asarray(c, dtype=np.float64), np.asarray(a), np.asarray(b)

        self._macs_arr = arrays(self._macs)
        self._params_arr = arrays(self._params)
        self._floor_arr = arrays([(c, a, self.ONE) for c, a in self._floor_macs])
        self.used_dims = sorted({int(d) for arr in (self._macs_arr, self._params_arr, self._floor_arr)
                                 for d in np.concatenate(arr[1:]) if d != self.ONE})
        return self

    def evaluate(self, kept):
        """Cost of each row of ``kept`` (``n x n_dims`` float array of kept channel counts).

        Returns:
            ``(macs, params)``, float64 arrays of length ``n`` holding integers.
        """
        # elementwise products and sums, not BLAS: numpy's threaded BLAS fights torch's threads
        ext = np.concatenate([kept, np.ones((kept.shape[0], 1))], axis=1)
        c, a, b = self._macs_arr
        macs = (ext[:, a] * ext[:, b] * c).sum(axis=1) + self.const_macs
        c, a, _ = self._floor_arr
        if c.size:
            macs = macs + np.floor(ext[:, a] * c).sum(axis=1)
        c, a, b = self._params_arr
        params = (ext[:, a] * ext[:, b] * c).sum(axis=1) + self.const_params
        return macs, params


def add_module_cost(model, module, name, calls, dim_in, dim_out):
    """Add one module's thop cost to ``model``.

    Args:
        model: The :class:`CostModel` being built.
        module: The module (of the base network).
        name: Its qualified name, for error messages.
        calls: ``[(input_shape, output_shape), ...]``, one per call in the traced forward.
        dim_in, dim_out: Index of the dim holding its input / output channel count, or ``None``
            when that side is never pruned.

    Raises:
        MopruneError: the module's cost depends on pruned channels in a way thop's rule for its
            type cannot be expressed here.
    """
    mtype = type(module)
    touched = dim_in is not None or dim_out is not None
    if mtype in _ZERO_OPS:
        return True

    def unsupported(why):
        return MopruneError(
            f"cannot count the cost of module {name!r} ({mtype.__name__}) after channel pruning: {why}; "
            "pass it (or the layer before it) in ignored_layers="
        )

    if mtype in _CONV:
        if module.transposed:
            raise unsupported("transposed convolutions are not supported")
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        if module.groups != 1 and not depthwise and touched:
            raise unsupported("grouped (non-depthwise) convolutions are not supported")
        kernel = _prod(module.kernel_size)
        for _, out_shape in calls:
            positions = _prod(out_shape) // out_shape[1]
            per_out = positions * kernel * (module.in_channels // module.groups)
            if depthwise or module.groups != 1:
                _add(model, "macs", per_out, (dim_out, module.out_channels))
            else:
                _add(model, "macs", positions * kernel, (dim_out, module.out_channels), (dim_in, module.in_channels))
        if depthwise or module.groups != 1:
            _add(model, "params", kernel * (module.in_channels // module.groups), (dim_out, module.out_channels))
        else:
            _add(model, "params", kernel, (dim_out, module.out_channels), (dim_in, module.in_channels))
        if module.bias is not None:
            _add(model, "params", 1, (dim_out, module.out_channels))
    elif mtype is nn.Linear:
        for _, out_shape in calls:
            rows = _prod(out_shape) // out_shape[-1]
            _add(model, "macs", rows, (dim_out, module.out_features), (dim_in, module.in_features))
        _add(model, "params", 1, (dim_out, module.out_features), (dim_in, module.in_features))
        if module.bias is not None:
            _add(model, "params", 1, (dim_out, module.out_features))
    elif mtype in _NORM:
        affine = bool(getattr(module, "affine", False))
        for in_shape, _ in calls:
            per_channel = 2 * (_prod(in_shape) // in_shape[1]) * (2 if affine else 1)
            _add(model, "macs", per_channel, (dim_out, in_shape[1]))
        if affine:
            _add(model, "params", 2, (dim_out, module.num_features))
    elif mtype in _AVGPOOL or mtype in _ADAPTIVE_AVGPOOL:
        for in_shape, out_shape in calls:
            per_channel = _prod(out_shape) // out_shape[1]
            if mtype in _AVGPOOL:
                _add(model, "macs", per_channel, (dim_out, out_shape[1]))
                continue
            kernel = 1.0
            for i, o in zip(in_shape[2:], out_shape[2:]):
                kernel *= float(i) / float(o)
            coef = (kernel + 1.0) * per_channel
            if dim_out is None:
                model.const_macs += int(coef * out_shape[1])
            elif float(coef).is_integer():
                model.add_macs(coef, dim_out)
            else:
                model.add_floor_macs(coef, dim_out)
    elif mtype is nn.PReLU:
        if module.num_parameters > 1 and touched:
            _add(model, "params", 1, (dim_out, module.num_parameters))
        else:
            model.const_params += module.num_parameters
        for in_shape, _ in calls:  # thop profiles in eval mode, where it counts PReLU
            _add(model, "macs", _prod(in_shape) // in_shape[1], (dim_out, in_shape[1]))
    elif touched:
        raise unsupported("thop's rule for this type is not modelled")
    else:
        return False  # caller adds thop's own constant count
    return True


def _add(model, what, coef, *sides):
    """Add ``coef * prod(kept(side))``; a side is ``(dim, base_size)`` and ``dim=None`` means never
    pruned, so its base size folds into the coefficient (or the constant)."""
    dims = []
    for dim, size in sides:
        if dim is None:
            coef *= size
        else:
            dims.append(dim)
    if not dims:
        if what == "macs":
            model.const_macs += coef
        else:
            model.const_params += coef
        return
    (model.add_macs if what == "macs" else model.add_params)(coef, *dims)
