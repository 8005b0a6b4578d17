"""A tiny fake space for the search-core tests: a 2-hidden-layer MLP on synthetic data.

``materialize`` zeroes hidden units (their incoming weights and bias), so a genome of one bit
per hidden unit means "keep this unit". Costs are analytic: MACs and parameters of the
equivalent smaller MLP. Everything is small enough to train in well under a second.
"""

import hashlib

import numpy as np
import torch
from pymoo.core.repair import Repair
from torch import nn
from torch.utils.data import TensorDataset

from moprune.space.base import Plan, Space

IN, H1, H2, OUT = 10, 32, 32, 4


def make_data(n, seed):
    """Synthetic 4-class data: a fixed random teacher labels Gaussian inputs."""
    g = torch.Generator().manual_seed(1234)
    w = torch.randn(IN, OUT, generator=g)
    w2 = torch.randn(IN, IN, generator=g)
    gx = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN, generator=gx)
    y = (torch.tanh(x @ w2) @ w + 0.3 * x @ w).argmax(1)
    return TensorDataset(x, y)


def make_mlp(*, train=True, bn=False):
    torch.manual_seed(0)  # test-only: a fixed model
    layers = [nn.Linear(IN, H1)]
    if bn:
        layers.append(nn.BatchNorm1d(H1))
    layers += [nn.ReLU(), nn.Linear(H1, H2), nn.ReLU(), nn.Linear(H2, OUT)]
    model = nn.Sequential(*layers)
    if train:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny model: one thread is fastest, esp. on a busy CPU
        data = make_data(2000, seed=1)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(0)
        for _ in range(300):
            idx = torch.randint(0, 2000, (128,), generator=g)
            loss = nn.functional.cross_entropy(model(data.tensors[0][idx]), data.tensors[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.set_num_threads(previous)
    return model.eval()


class MinOneRepair(Repair):
    """Keep at least one unit per group."""

    def __init__(self, slices):
        super().__init__()
        self.slices = slices

    def _do(self, problem, X, **kwargs):
        X = np.asarray(X, dtype=bool).copy()
        for s in self.slices:
            empty = ~X[:, s].any(axis=1)
            X[empty, s.start] = True
        return X


class TinySpace(Space):
    """One bit per hidden unit of a 2-hidden-layer MLP."""

    encoding = "binary"
    vtype = bool

    def __init__(self, model, *, fail_key=None, fail_if=None):
        self.model = model
        self.n_var = H1 + H2
        self.xl = np.zeros(self.n_var)
        self.xu = np.ones(self.n_var)
        self.group_names = ["hidden1", "hidden2"]
        self.group_slices = [slice(0, H1), slice(H1, H1 + H2)]
        self.base_macs = IN * H1 + H1 * H2 + H2 * OUT
        self.base_params = self.base_macs + H1 + H2 + OUT
        self.fail_key = fail_key  # a plan key whose materialization raises (failure tests)
        self.fail_if = fail_if  # or a predicate on the plan
        self.n_materialized = 0
        lin = [m for m in model if isinstance(m, nn.Linear)]
        self._linears = [model[i] for i, m in enumerate(model) if isinstance(m, nn.Linear)]
        assert len(lin) == 3

    def decode(self, x):
        x = np.asarray(self.check_genome(x), dtype=bool)
        key = hashlib.sha1(np.packbits(x).tobytes()).hexdigest()[:16]
        kept = tuple((name, tuple(np.flatnonzero(x[s]).tolist()))
                     for name, s in zip(self.group_names, self.group_slices))
        return Plan("channels", kept, key, {f"kept/{n}": len(k) for n, k in kept})

    def materialize(self, x_or_plan):
        plan = x_or_plan if isinstance(x_or_plan, Plan) else self.decode(x_or_plan)
        if plan.key == self.fail_key or (self.fail_if is not None and self.fail_if(plan)):
            raise RuntimeError("materialize failed on purpose")
        self.n_materialized += 1
        model = make_copy(self.model)
        linears = [m for m in model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, (_, kept) in zip(linears[:2], plan.kept):
                mask = torch.zeros(lin.out_features)
                mask[list(kept)] = 1.0
                lin.weight.mul_(mask[:, None])
                lin.bias.mul_(mask)
        return model.eval()

    def cost(self, X):
        X = np.asarray(X, dtype=bool)
        h1 = X[:, :H1].sum(1).astype(float)
        h2 = X[:, H1:].sum(1).astype(float)
        macs = IN * h1 + h1 * h2 + h2 * OUT
        params = macs + h1 + h2 + OUT
        return {"macs": macs, "params": params, "macs_ratio": macs / self.base_macs,
                "params_ratio": params / self.base_params, "sparsity": 1.0 - (h1 + h2) / (H1 + H2)}

    def repair(self):
        return MinOneRepair(self.group_slices)


class ClipRepair(Repair):
    def _do(self, problem, X, **kwargs):
        return np.clip(np.asarray(X, dtype=float), 0.0, 1.0)


class TinyRatioSpace(TinySpace):
    """One keep ratio per hidden layer (the first ``max(1, round(r * H))`` units are kept)."""

    encoding = "ratio"
    vtype = float

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.n_var = 2
        self.xl = np.zeros(2)
        self.xu = np.ones(2)
        self.group_slices = [slice(0, 1), slice(1, 2)]

    def to_bits(self, X):
        X = np.atleast_2d(np.asarray(X, dtype=float))
        bits = np.zeros((len(X), H1 + H2), dtype=bool)
        for i, (r1, r2) in enumerate(X):
            bits[i, :max(1, int(round(r1 * H1)))] = True
            bits[i, H1:H1 + max(1, int(round(r2 * H2)))] = True
        return bits

    def decode(self, x):
        x = self.check_genome(x)
        return TinySpace.decode(_BitsView(self), self.to_bits(x)[0])

    def cost(self, X):
        return TinySpace.cost(self, self.to_bits(X))

    def repair(self):
        return ClipRepair()


class _BitsView:
    """Lets TinySpace.decode run on a bit genome for a ratio space."""

    def __init__(self, space):
        self.group_names = space.group_names
        self.group_slices = [slice(0, H1), slice(H1, H1 + H2)]

    def check_genome(self, x):
        return np.asarray(x)


def make_copy(model):
    import copy

    return copy.deepcopy(model)


_MODEL = None


def tiny_model():
    """The trained tiny MLP (trained once per test session)."""
    global _MODEL
    if _MODEL is None:
        _MODEL = make_mlp()
    return _MODEL


def random_genomes(seed=0, n=6, low=0.2):
    """``n`` binary genomes of :class:`TinySpace`: random keep fractions in [``low``, 1], the first all ones."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, H1 + H2)) < rng.uniform(low, 1.0, size=(n, 1))
    X[:, 0] = X[:, H1] = True
    X[0] = True
    return X


def tiny_problem(*, objectives=("error", "macs"), max_accuracy_drop=None, n_val=300, ratio=False,
                 space_kwargs=None, **evaluator_kwargs):
    """A fresh problem (its own space and evaluator) on the tiny MLP."""
    from moprune.evaluation import Evaluator
    from moprune.problem import PruningProblem

    space = (TinyRatioSpace if ratio else TinySpace)(tiny_model(), **(space_kwargs or {}))
    evaluator = Evaluator(make_data(n_val, seed=2), n_samples=None, batch_size=150, num_threads=1,
                          **evaluator_kwargs)
    return PruningProblem(space, evaluator, objectives=objectives, max_accuracy_drop=max_accuracy_drop)


class Interrupt(Exception):
    """Raised by :func:`interrupt_after` to stop a search, as a kill would."""


def interrupt_after(generation):
    """A search callback that stops the run once ``generation`` is done (its checkpoint written)."""
    def hook(algorithm, problem):
        if problem.generation == generation:
            raise Interrupt
    return hook
