"""Pruning-aware operators: they know groups, keep ratios and unit importance.

A generic optimizer sees a genome as independent numbers. These operators see what a pruning
genome is: groups of units (channels of a coupled layer group, weights of a layer), each keeping
some fraction of its units, the most important first. They work on every space that implements
``group_ratios``, ``genomes_from_ratios`` and (binary encodings) ``keep_order``.

- :class:`SweepSampling`: the initial population is a uniform keep-ratio sweep (what a plain
  Torch-Pruning user would try), spaced evenly in log-MACs, plus per-group perturbations of it.
- :class:`KeepRatioMutation`: multiplies the keep ratio of one or more groups by a log-normal
  factor; binary genomes drop their least important kept units or restore their most important
  pruned ones, and sometimes swap single units near the importance boundary.
- :class:`GroupUniformCrossover`: swaps whole groups between parents.
- :class:`PlanDuplicateElimination`: duplicates are genomes that decode to the same plan
  (not only equal genomes), checked against every plan the algorithm has already evaluated.
- :class:`CostCeilingRepair`: the space's repair, then genomes above a cost ceiling shrunk
  (every group keeps proportionally fewer units, least important dropped first) to fit it.

All draw every random number from pymoo's ``random_state``.
"""

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling

from moprune.exceptions import invalid_value
from moprune.operators.binary import run_progress
from moprune.validation import check_probability, check_real

__all__ = ["CostCeilingRepair", "GroupUniformCrossover", "KeepRatioMutation", "PlanDuplicateElimination",
           "SweepSampling", "allocation_genome", "balance_groups", "params_per_macs", "shrink_to_cost", "tilted_allocation",
           "uniform_genome", "uniform_sweep"]


def _space_of(problem):
    space = getattr(problem, "space", None)
    if space is None or not hasattr(space, "genomes_from_ratios"):
        raise invalid_value("problem", "a moprune PruningProblem (its space maps keep ratios to genomes)",
                            type(problem).__name__)
    return space


_CONTINUOUS_UNITS = 1000
"""Resolution of a ratio gene whose space does not say how many units its group has."""


def _group_sizes(space):
    """Units per group: a binary group's genes, or a ratio space's ``group_sizes``."""
    if space.vtype is bool:
        return np.array([sl.stop - sl.start for sl in space.group_slices], dtype=np.int64)
    sizes = getattr(space, "group_sizes", None)
    if sizes is None or len(sizes) != len(space.group_slices):
        return np.full(len(space.group_slices), _CONTINUOUS_UNITS, dtype=np.int64)
    return np.asarray(sizes, dtype=np.int64)


def _uniform_genomes(space, n_grid):
    """The uniform keep ratios ``k / n_grid`` (k = 1..n_grid) and their repaired genomes."""
    grid = np.linspace(0.0, 1.0, n_grid + 1)[1:]
    genomes = space.genomes_from_ratios(np.repeat(grid[:, None], len(space.group_slices), axis=1))
    return grid, space.repair()._do(None, genomes)


def uniform_costs(space, n_grid=400):
    """The uniform keep ratios ``k / n_grid`` (k = 1..n_grid) and the cost of their repaired genomes.

    Returns:
        ``(ratios, cost)``: the ratio grid and ``space.cost`` of its genomes (a dict of arrays).
    """
    grid, genomes = _uniform_genomes(space, n_grid)
    return grid, space.cost(genomes)


def uniform_genome(space, macs_ratio: float, n_grid: int = 400) -> np.ndarray:
    """The uniform model (the same keep ratio in every group) whose MACs are nearest ``macs_ratio``.

    What a plain Torch-Pruning user gets at that size: the contender :func:`moprune.retrain_front`
    retrains beside a front point when asked for ``uniform_twins``.

    Args:
        space: A :class:`moprune.space.Space` with ``genomes_from_ratios``.
        macs_ratio: Target MACs, a fraction of the base model's, in (0, 1].
        n_grid: Resolution of the ratio grid.

    Returns:
        The repaired genome (nearest on a log-MACs scale).
    """
    macs_ratio = check_real("macs_ratio", macs_ratio, low=0.0, high=1.0, low_open=True)
    _, genomes = _uniform_genomes(space, n_grid)
    macs = np.asarray(space.cost(genomes)["macs_ratio"], dtype=float)
    return genomes[int(np.argmin(np.abs(np.log(np.maximum(macs, 1e-12)) - np.log(macs_ratio))))]


def allocation_genome(space, relative, macs_ratio: float, n_steps: int = 40, at_most: bool = False) -> np.ndarray:
    """The genome keeping ``c * relative[g]`` of every group ``g`` whose MACs are nearest ``macs_ratio``.

    ``relative`` says how the groups share the budget (all ones: the uniform model); the common
    factor ``c`` is bisected so that the repaired genome's MACs ratio is nearest the target on a
    log scale. Keep ratios are clipped to [0.01, 1]; units are kept most important first.

    Args:
        space: A :class:`moprune.space.Space` with ``genomes_from_ratios``.
        relative: Positive per-group weights, one per group.
        macs_ratio: Target MACs, a fraction of the base model's, in (0, 1].
        n_steps: Bisection steps.
        at_most: Nearest among the genomes of at most ``macs_ratio`` (a budget), when the
            bisection meets one; otherwise nearest on either side.

    Returns:
        The repaired genome.
    """
    macs_ratio = check_real("macs_ratio", macs_ratio, low=0.0, high=1.0, low_open=True)
    relative = np.asarray(relative, dtype=float)
    if relative.shape != (len(space.group_slices),) or not np.isfinite(relative).all() or relative.min() <= 0:
        raise invalid_value("relative", f"{len(space.group_slices)} positive finite per-group weights",
                            f"array of shape {relative.shape}")
    repair = space.repair()
    low, high = 0.0, 1.0 / max(float(relative.min()), 1e-6)
    best, best_gap = None, np.inf
    below, below_gap = None, np.inf
    for _ in range(n_steps):  # MACs grow with c
        c = (low + high) / 2
        genome = repair._do(None, space.genomes_from_ratios(np.clip(c * relative, 0.01, 1.0)[None, :]))[0]
        macs = float(space.cost(genome[None, :])["macs_ratio"][0])
        gap = abs(np.log(max(macs, 1e-12) / macs_ratio))
        if gap < best_gap:
            best, best_gap = genome, gap
        if macs <= macs_ratio and gap < below_gap:
            below, below_gap = genome, gap
        low, high = (c, high) if macs < macs_ratio else (low, c)
    return below if at_most and below is not None else best


def params_per_macs(space, macs_ratio: float, step: float = 0.1) -> np.ndarray:
    """Per group, the parameters one more unit keeps per MAC it costs, at the uniform model of a size.

    Late layers of a CNN run at low resolution: their channels hold many weights and cost few
    MACs. At equal MACs, models that keep more of those (more parameters) tend to retrain better
    (``benchmarks/bench_proxy.py``: Spearman 0.88 between parameters and retrained accuracy at
    3.5% of ``resnet8``'s MACs). Measured by finite differences of ``space.cost`` around the
    uniform model nearest ``macs_ratio``.

    Args:
        space: A :class:`moprune.space.Space` with ``genomes_from_ratios`` and ``group_ratios``.
        macs_ratio: The size, a fraction of the base model's MACs, in (0, 1].
        step: Keep-ratio change of one group for the finite difference.

    Returns:
        Positive floats, one per group (parameters ratio gained per MACs ratio spent).
    """
    ratios = space.group_ratios(uniform_genome(space, macs_ratio)[None, :])[0].astype(float)
    base = space.cost(space.genomes_from_ratios(ratios[None, :]))
    out = np.empty(len(ratios))
    for g in range(len(ratios)):
        up = ratios.copy()
        up[g] = min(1.0, up[g] + step) if up[g] + step <= 1.0 else max(0.0, up[g] - step)
        cost = space.cost(space.genomes_from_ratios(up[None, :]))
        d_macs = float(cost["macs_ratio"][0] - base["macs_ratio"][0])
        d_params = float(cost["params_ratio"][0] - base["params_ratio"][0])
        out[g] = d_params / d_macs if abs(d_macs) > 1e-12 else np.nan
    finite = np.isfinite(out) & (out > 0)
    fill = float(np.exp(np.mean(np.log(out[finite])))) if finite.any() else 1.0
    return np.where(finite, out, fill)


def tilted_allocation(space, macs_ratio: float, tilt: float, at_most: bool = False) -> np.ndarray:
    """The genome of ``macs_ratio`` whose groups keep ratios ``c * params_per_macs ** tilt``.

    ``tilt = 0`` is (about) the uniform model; positive tilts move the budget from groups that
    are expensive in MACs (early, high-resolution layers) to those that hold many parameters per
    MAC (late layers), at the same MACs.

    Args:
        space: A :class:`moprune.space.Space` with ``genomes_from_ratios`` and ``group_ratios``.
        macs_ratio: Target MACs, a fraction of the base model's, in (0, 1].
        tilt: Exponent of the per-group weights (0: uniform; 0.1-0.3: a mild shift).
        at_most: Never above ``macs_ratio`` when a genome at or below it exists (see :func:`allocation_genome`).

    Returns:
        The repaired genome (see :func:`allocation_genome`).
    """
    tilt = check_real("tilt", tilt, low=-2.0, high=2.0)
    return allocation_genome(space, params_per_macs(space, macs_ratio) ** tilt, macs_ratio, at_most=at_most)


def uniform_sweep(space, n_points, *, min_macs=0.01, max_macs=0.9, n_grid=400):
    """Uniform keep ratios whose MACs are spread evenly on a log scale.

    Args:
        space: A :class:`moprune.space.Space`.
        n_points: How many ratios to return.
        min_macs, max_macs: MACs range (fractions of the base model) the sweep spans.
        n_grid: Resolution of the ratio grid searched for each MACs level.

    Returns:
        A sorted float array of ``n_points`` distinct keep ratios (fewer if the space has fewer
        distinct uniform models).
    """
    grid, cost = uniform_costs(space, n_grid)
    macs = np.asarray(cost["macs_ratio"], dtype=float)
    targets = np.geomspace(min_macs, max_macs, n_points)
    chosen = sorted({int(np.argmin(np.abs(np.log(np.maximum(macs, 1e-12)) - np.log(t)))) for t in targets})
    return grid[chosen]


class SweepSampling(Sampling):
    """A uniform keep-ratio sweep, its parameter-tilted twins, then per-group perturbations.

    The first ``sweep_fraction`` of the population keeps the same fraction of units in every
    group, at ratios whose MACs run evenly on a log scale from ``min_macs`` to ``max_macs``: the
    trivial baseline every search should beat, evaluated first. The next ``tilt_fraction`` are
    sweep levels with the same MACs but the budget moved towards the groups that hold many
    parameters per MAC (:func:`tilted_allocation` with ``tilt``): at equal MACs such models
    tend to retrain better than uniform ones. The rest starts from a random sweep level and
    multiplies each group's ratio by ``exp(sigma * N(0, 1))``, so the search starts near the
    uniform front but with the per-layer differences it is there to find.

    Args:
        sweep_fraction: Share of the population that is the uniform sweep, in [0, 1].
        sigma: Spread of the per-group log-normal perturbation.
        min_macs, max_macs: MACs range (fractions of the base) of the sweep.
        tilt: Tilt of the tilted twins (see :func:`tilted_allocation`), in [-2, 2].
        tilt_fraction: Share of the population that is tilted twins, in [0, 1] (0: none; at most
            what the sweep leaves, and at most one twin per sweep level).
    """

    def __init__(self, *, sweep_fraction=0.3, sigma=0.5, min_macs=0.01, max_macs=0.9, tilt=0.15,
                 tilt_fraction=0.0):
        super().__init__()
        self.sweep_fraction = check_probability("sweep_fraction", sweep_fraction)
        self.tilt = check_real("tilt", tilt, low=-2.0, high=2.0)
        self.tilt_fraction = check_probability("tilt_fraction", tilt_fraction)
        self.sigma = check_real("sigma", sigma, low=0.0, low_open=True)
        self.min_macs = check_real("min_macs", min_macs, low=0.0, high=1.0, low_open=True)
        self.max_macs = check_real("max_macs", max_macs, low=0.0, high=1.0, low_open=True)
        if self.min_macs >= self.max_macs:
            raise invalid_value("min_macs", f"a fraction below max_macs={self.max_macs}", min_macs)

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        space = _space_of(problem)
        n_groups = len(space.group_slices)
        levels = uniform_sweep(space, max(int(round(self.sweep_fraction * n_samples)), 2),
                               min_macs=self.min_macs, max_macs=self.max_macs)
        n_sweep = min(len(levels), int(round(self.sweep_fraction * n_samples)), n_samples)
        if n_sweep < len(levels):  # keep the sweep's ends and spread the rest
            levels = levels[np.unique(np.linspace(0, len(levels) - 1, n_sweep).round().astype(int))]
            n_sweep = len(levels)
        R = np.ones((n_samples, n_groups))  # the tilted twins' rows are replaced below
        R[:n_sweep] = levels[:, None]
        n_tilt = min(int(round(self.tilt_fraction * n_samples)), n_samples - n_sweep, n_sweep)
        n_rest = n_samples - n_sweep - n_tilt
        if n_rest:
            all_levels = uniform_sweep(space, 16, min_macs=self.min_macs, max_macs=self.max_macs)
            base = all_levels[random_state.integers(len(all_levels), size=n_rest)]
            noise = np.exp(self.sigma * random_state.standard_normal((n_rest, n_groups)))
            R[n_sweep + n_tilt:] = np.clip(base[:, None] * noise, 0.0, 1.0)
        X = space.genomes_from_ratios(R)
        if n_tilt:  # twins of sweep levels spread over the sweep (distinct: n_tilt <= n_sweep), each at its MACs
            twins = levels[np.unique(np.linspace(0, n_sweep - 1, n_tilt).round().astype(int))]
            macs = np.asarray(space.cost(space.genomes_from_ratios(np.repeat(twins[:, None], n_groups, axis=1)))
                              ["macs_ratio"], dtype=float)
            for i, target in enumerate(macs):
                X[n_sweep + i] = tilted_allocation(space, float(target), self.tilt)
        return X


class KeepRatioMutation(Mutation):
    """Change how many units some groups keep, by a log-normal factor; prune by importance.

    Each mutated individual changes one group chosen at random, and every other group with
    probability ``1 / n_groups``: the new kept count is ``round(count * exp(sigma * N(0, 1)))``,
    moved by at least one unit and clipped to the group. ``sigma`` decays linearly from
    ``sigma`` to ``final_sigma`` over the run (progress read from the termination).

    Binary genomes (channels, weight masks) lose their least important kept units or regain
    their most important pruned ones, so single-unit choices made earlier survive; with
    probability ``swap_prob`` one group also swaps one of its least important kept units for
    one of its most important pruned ones (the boundary ``swap_window`` of each side), which
    refines single units. Ratio genomes get the new ratio (an exact ``count / size``).

    Args:
        sigma: Initial log-normal step.
        final_sigma: Final log-normal step.
        swap_prob: Probability of a boundary swap per individual (binary encodings only).
        swap_window: Fraction of a group's kept (pruned) units near the boundary a swap picks from.
        prob: Probability that an individual is mutated.
    """

    def __init__(self, *, sigma=0.3, final_sigma=0.1, swap_prob=0.3, swap_window=0.25, prob=1.0):
        super().__init__(prob=check_probability("prob", prob))
        self.sigma = check_real("sigma", sigma, low=0.0, low_open=True)
        self.final_sigma = check_real("final_sigma", final_sigma, low=0.0, low_open=True)
        self.swap_prob = check_probability("swap_prob", swap_prob)
        self.swap_window = check_probability("swap_window", swap_window, allow_zero=False)

    def current_sigma(self, progress):
        """The log-normal step at ``progress`` in [0, 1]."""
        return self.sigma + (self.final_sigma - self.sigma) * progress

    def _do(self, problem, X, *args, random_state=None, algorithm=None, **kwargs):
        space = _space_of(problem)
        sizes = _group_sizes(space)
        n_groups = len(sizes)
        binary = space.vtype is bool
        X = np.array(X, dtype=bool if binary else np.float64, copy=True)
        order = space.keep_order() if binary else None
        ratios = space.group_ratios(X)
        sigma = self.current_sigma(run_progress(algorithm))
        for i in range(len(X)):
            chosen = random_state.random(n_groups) < 1.0 / n_groups
            chosen[random_state.integers(n_groups)] = True
            for g in np.flatnonzero(chosen):
                count = int(round(ratios[i, g] * sizes[g]))
                step = np.exp(sigma * random_state.standard_normal())
                new = int(round(count * step))
                if new == count:
                    new = count + (1 if step >= 1.0 else -1)
                new = min(max(new, 1), int(sizes[g]))
                sl = space.group_slices[g]
                if binary:
                    X[i, sl] = _set_count(X[i, sl], order[sl], new)
                else:
                    X[i, sl] = new / sizes[g]
            if binary and random_state.random() < self.swap_prob:
                g = int(random_state.integers(n_groups))
                sl = space.group_slices[g]
                X[i, sl] = _swap(X[i, sl], order[sl], self.swap_window, random_state)
        return X


def _set_count(bits, order, new):
    """Bits with exactly ``new`` ones: drop the least important kept, add the most important pruned."""
    bits = bits.copy()
    count = int(bits.sum())
    if new < count:
        kept = np.flatnonzero(bits)
        bits[kept[np.argsort(-order[kept])[:count - new]]] = False
    elif new > count:
        pruned = np.flatnonzero(~bits)
        bits[pruned[np.argsort(order[pruned])[:new - count]]] = True
    return bits


def _swap(bits, order, window, random_state):
    """Swap one of the least important kept units for one of the most important pruned ones."""
    kept, pruned = np.flatnonzero(bits), np.flatnonzero(~bits)
    if len(kept) < 2 or len(pruned) == 0:
        return bits
    weak = kept[np.argsort(-order[kept])][:max(1, int(window * len(kept)))]
    strong = pruned[np.argsort(order[pruned])][:max(1, int(window * len(pruned)))]
    bits = bits.copy()
    bits[weak[random_state.integers(len(weak))]] = False
    bits[strong[random_state.integers(len(strong))]] = True
    return bits


class GroupUniformCrossover(Crossover):
    """Uniform crossover of whole groups: each group of the two children comes from either parent.

    Args:
        prob: Probability that a mating is crossed (otherwise the children copy the parents).
        swap_prob: Probability that a group is swapped between the two children.
    """

    def __init__(self, *, prob=0.9, swap_prob=0.5):
        super().__init__(2, 2, prob=check_probability("prob", prob))
        self.swap_prob = check_probability("swap_prob", swap_prob)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        space = _space_of(problem)
        _, n_matings, _ = X.shape
        Y = X.copy()
        for g, sl in enumerate(space.group_slices):
            swap = random_state.random(n_matings) < self.swap_prob
            Y[0, swap, sl], Y[1, swap, sl] = X[1, swap, sl], X[0, swap, sl]
        return Y


def _plan_key(space, x):
    try:
        return space.decode(x).key
    except Exception:  # an undecodable genome is compared by its bytes
        return np.asarray(x).tobytes()


class PlanDuplicateElimination(DuplicateElimination):
    """Genomes are duplicates when they decode to the same plan, or to one evaluated before.

    Two ratio genomes that round to the same kept counts, or two binary genomes equal after
    repair, are one model: evaluating both spends budget on a cache hit. Plans the algorithm has
    evaluated are added to :attr:`seen` (see :class:`moprune.algorithms.focused.FocusedNSGA2`),
    and offspring decoding to one of them are regenerated while :attr:`check_seen` is on.

    Args:
        space: The :class:`moprune.space.Space` genomes belong to.
    """

    def __init__(self, space):
        super().__init__()
        self.space = space
        self.seen = set()
        self.check_seen = True

    def key(self, individual):
        """Plan key of a pymoo ``Individual`` (remembered in its ``data``) or of a genome."""
        if not hasattr(individual, "X"):
            return _plan_key(self.space, individual)
        key = individual.data.get("plan_key")
        if key is None or individual.data.get("plan_key_of") is not individual.X:
            key = individual.data["plan_key"] = _plan_key(self.space, individual.X)
            individual.data["plan_key_of"] = individual.X
        return key

    def remember(self, pop):
        """Add the plans of ``pop`` (a pymoo ``Population``) to :attr:`seen`."""
        self.seen.update(self.key(ind) for ind in pop)

    def _do(self, pop, other, is_duplicate):
        taken = set(self.seen) if self.check_seen else set()
        if other is not None:
            taken.update(self.key(ind) for ind in other)
        for i, ind in enumerate(pop):
            k = self.key(ind)
            if k in taken:
                is_duplicate[i] = True
            else:
                taken.add(k)
        return is_duplicate


def _scaled(space, x, counts, sizes, order, factor):
    """Genome ``x`` with each group's kept count multiplied by ``factor`` (at least one unit)."""
    new = np.maximum(np.round(counts * factor), 1).astype(np.int64)
    y = x.copy()
    for g, sl in enumerate(space.group_slices):
        if order is not None:
            y[sl] = _set_count(x[sl], order[sl], int(new[g]))
        else:
            y[sl] = new[g] / sizes[g]
    return y


def shrink_to_cost(space, X, ceiling, *, key="macs_ratio", n_steps=24):
    """Genomes above a cost ceiling, scaled down until they fit it.

    Every group of a genome whose ``space.cost(...)[key]`` exceeds ``ceiling`` keeps the same
    fraction fewer units (binary genomes drop their least important kept units, so their own
    choices of units survive), by the largest of ``n_steps`` geometric factors in (0.05, 1)
    that brings the cost down to the ceiling (the smallest factor if none does).

    Args:
        space: A :class:`moprune.space.Space` with ``group_ratios`` and ``cost``.
        X: Genomes, ``n x n_var``.
        ceiling: Largest allowed cost (same unit as ``key``).
        key: Cost to bound: ``"macs_ratio"`` or ``"params_ratio"``.
        n_steps: Resolution of the scale factors tried.

    Returns:
        A new genome array; genomes within the ceiling are unchanged.
    """
    X = np.array(X, copy=True)
    cost = np.asarray(space.cost(X)[key], dtype=float)
    over = np.flatnonzero(cost > ceiling)
    if not len(over):
        return X
    sizes = _group_sizes(space)
    order = space.keep_order() if space.vtype is bool else None
    counts = np.round(space.group_ratios(X[over]) * sizes)
    factors = np.geomspace(1.0, 0.05, n_steps + 1)[1:]
    repair = space.repair()
    for row, i in enumerate(over):
        tries = np.array([_scaled(space, X[i], counts[row], sizes, order, f) for f in factors])
        tries = repair._do(None, tries)
        fits = np.flatnonzero(np.asarray(space.cost(tries)[key], dtype=float) <= ceiling)
        X[i] = tries[fits[0] if len(fits) else -1]
    return X


def balance_groups(space, X, max_imbalance):
    """Genomes whose groups keep at least the geometric mean of their keep ratios / ``max_imbalance``.

    A group pruned far below the rest (a bottleneck of a few channels) can score well before
    retraining yet caps what retraining recovers: on ``resnet8`` / Fashion-MNIST, every front
    point of the default search without this bound that lost more than 1.5 test points to the
    uniform model of its size after retraining had a group below half that mean; with the bound
    at 2 the mean loss fell from 1.6-1.9 points to 0.1-1.3 (study 8,
    ``studies/fashion_retrained_fronts/``). Groups under the floor get back their most important
    pruned units (binary genomes) or the floor's ratio (ratio genomes). The mean is that of the
    lifted genome (a fixed point), so the bound holds after lifting.

    Args:
        space: A :class:`moprune.space.Space` with ``group_ratios`` and ``genomes_from_ratios``.
        X: Genomes, ``n x n_var``.
        max_imbalance: How many times below the mean (geometric, over groups) a group's keep
            ratio may be, >= 1.

    Returns:
        A new genome array; genomes already within the bound are unchanged.
    """
    X = np.array(X, copy=True)
    if len(X) == 0:
        return X
    sizes = _group_sizes(space)
    counts = np.round(space.group_ratios(X) * sizes)
    lifted = counts.copy()
    for _ in range(16):  # lifting raises the mean: iterate to the fixed point (converges geometrically)
        floor = np.exp(np.mean(np.log(np.maximum(lifted / sizes, 1e-9)), axis=1)) / max_imbalance
        need = np.maximum(lifted, np.minimum(np.ceil(floor[:, None] * sizes - 1e-9), sizes))
        if np.array_equal(need, lifted):
            break
        lifted = need
    order = space.keep_order() if space.vtype is bool else None
    for i, g in zip(*np.nonzero(lifted > counts)):
        sl = space.group_slices[g]
        if order is not None:
            X[i, sl] = _set_count(X[i, sl], order[sl], int(lifted[i, g]))
        else:
            X[i, sl] = lifted[i, g] / sizes[g]
    return X


class CostCeilingRepair(Repair):
    """The space's own repair, :func:`balance_groups`, then :func:`shrink_to_cost` above the ceiling and limits.

    An algorithm sets :attr:`ceiling` while it runs (``None``: no bound), e.g. to a multiple of
    the smallest model that kept the base accuracy, so offspring never grow into large models
    that cost the most to evaluate and barely differ in error. ``limits`` are a user's budget:
    they bound every genome repaired, whatever the ceiling. Shrinking scales every group by the
    same factor, so it keeps the balance (up to the one unit a group always keeps).

    Args:
        space: The :class:`moprune.space.Space` genomes belong to.
        key: Cost the ceiling bounds (``"macs_ratio"`` or ``"params_ratio"``).
        limits: Fixed bounds, e.g. ``{"macs_ratio": 0.1, "params_ratio": 0.05}`` (``None``: none).
        max_imbalance: Bound of :func:`balance_groups` (``None``: no bound).
    """

    def __init__(self, space, *, key="macs_ratio", limits=None, max_imbalance=None):
        super().__init__()
        self.space = space
        self.base = space.repair()
        self.key = key
        self.ceiling = None
        self.limits = dict(limits or {})
        self.max_imbalance = check_real("max_imbalance", max_imbalance, low=1.0, allow_none=True)

    def _do(self, problem, X, **kwargs):
        X = self.base._do(problem, X, **kwargs)
        if len(X) == 0:
            return X
        if self.max_imbalance is not None:
            X = balance_groups(self.space, X, self.max_imbalance)  # only adds units: stays repaired
        if self.ceiling is not None:
            X = shrink_to_cost(self.space, X, self.ceiling, key=self.key)
        for key, limit in self.limits.items():
            X = shrink_to_cost(self.space, X, limit, key=key)
        return X
