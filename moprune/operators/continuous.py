"""GeneCAI's operators for continuous (keep-ratio) genomes (document 004, Sec. 4.3-4.4).

Genes are keep ratios: ``xu`` is the unpruned model, ``xl`` the most pruned one. GeneCAI's
equations are written for values in ``[0, 1]``; here every distance, diversity and Gaussian
step is taken on the genome normalised by the bounds, ``z = (x - xl) / (xu - xl)``, so they
hold for any bounds. A "pruning rate" of a group is ``1 - z`` (0 = original, 1 = fully pruned).

pymoo separates *who mates with whom* (selection) from *how two parents recombine*
(crossover). GeneCAI's pairing rule (the fittest with the farthest, eq. 11) therefore lives in
:class:`FitnessProportionateSelection` (``pairing="distance"``), and the element swap with
``P_cross`` / ``P_swap`` in :class:`SwapCrossover`.

Every operator draws all its random numbers from the ``random_state`` pymoo hands to ``_do``.
"""

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.mutation import Mutation
from pymoo.core.sampling import Sampling
from pymoo.core.selection import Selection

from moprune.exceptions import invalid_value
from moprune.validation import check_bool, check_choice, check_int, check_probability, check_real

__all__ = [
    "normalize",
    "denormalize",
    "genecai_distance",
    "diversity",
    "selection_probabilities",
    "distance_pairs",
    "characterize_boundaries",
    "DirectedSampling",
    "FitnessProportionateSelection",
    "SwapCrossover",
    "DiversityGuidedMutation",
    "required_p_mutate",
]


def _span(xl, xu):
    span = np.asarray(xu, dtype=float) - np.asarray(xl, dtype=float)
    # A fixed gene (xl == xu) has no range; dividing by 1 keeps it at z = 0.
    return np.where(span > 0, span, 1.0)


def normalize(X, xl, xu):
    """Map genomes to ``[0, 1]`` per gene (``0`` = ``xl``, ``1`` = ``xu``)."""
    return (np.asarray(X, dtype=float) - np.asarray(xl, dtype=float)) / _span(xl, xu)


def denormalize(Z, xl, xu):
    """Inverse of :func:`normalize` (a gene with ``xl == xu`` stays at ``xl``)."""
    xl = np.asarray(xl, dtype=float)
    xu = np.asarray(xu, dtype=float)
    return np.clip(xl + np.asarray(Z, dtype=float) * (xu - xl), xl, xu)


def genecai_distance(x1, X2, *, K=1.0):
    """Eq. 11: ``sqrt(sum_i (x1[i] - x2[i])^2) / (d * K)``.

    Args:
        x1: One genome, shape ``(d,)``.
        X2: One genome ``(d,)`` or several ``(n, d)``.
        K: The largest allowed gene value (1 for normalised keep ratios).

    Returns:
        A float, or an array of ``n`` floats.
    """
    x1 = np.asarray(x1, dtype=float)
    X2 = np.asarray(X2, dtype=float)
    d = x1.shape[-1]
    return np.sqrt(np.sum((X2 - x1) ** 2, axis=-1)) / (d * K)


def diversity(X):
    """Eq. 12: mean over individuals of the squared distance to the population mean.

    Args:
        X: Population, shape ``(N, d)`` (normalised genes for GeneCAI).

    Returns:
        ``(1/N) sum_n sum_i (x_n[i] - mu[i])^2`` as a float (0 for an empty population).
    """
    X = np.asarray(X, dtype=float)
    if X.shape[0] == 0:
        return 0.0
    return float(np.mean(np.sum((X - X.mean(axis=0)) ** 2, axis=1)))


def selection_probabilities(fitness):
    """Eq. 10: ``p_n = (f_n - f_min) / sum_m (f_m - f_min)``.

    The weakest individual gets probability 0. When every fitness is equal (or the population
    holds one individual) the sum is 0 and the distribution falls back to uniform.
    Non-finite fitness values (failed candidates) count as the minimum.

    Args:
        fitness: Scores, higher is better, shape ``(N,)``.

    Returns:
        Probabilities of shape ``(N,)`` summing to 1.
    """
    f = np.asarray(fitness, dtype=float)
    finite = np.isfinite(f)
    if not finite.any():
        return np.full(f.shape, 1.0 / len(f))
    f_min = f[finite].min()
    w = np.where(finite, f - f_min, 0.0)
    total = w.sum()
    if not total > 0:
        return np.full(f.shape, 1.0 / len(f))
    return w / total


def distance_pairs(Z, fitness, *, K=1.0):
    """GeneCAI's pairing: the fittest available individual with the one farthest from it.

    Individuals are sorted by fitness (descending, ties by position); repeatedly the fittest
    remaining one becomes the first parent and the remaining one at the largest eq. 11 distance
    the second (ties go to the fitter one); both leave the pool. An odd one out is paired with
    the farthest individual of the whole pool.

    Args:
        Z: Selected genomes (normalised), shape ``(M, d)``.
        fitness: Their scores, shape ``(M,)``.
        K: Eq. 11 constant.

    Returns:
        Integer array of shape ``(ceil(M / 2), 2)`` of row indices into ``Z``.
    """
    Z = np.asarray(Z, dtype=float)
    f = np.nan_to_num(np.asarray(fitness, dtype=float), nan=-np.inf)
    order = list(np.argsort(-f, kind="stable"))
    pairs = []
    while len(order) >= 2:
        first = order.pop(0)
        dist = genecai_distance(Z[first], Z[order], K=K)
        j = int(np.argmax(dist))
        pairs.append((first, order.pop(j)))
    if order:
        last = order[0]
        dist = genecai_distance(Z[last], Z, K=K)
        dist[last] = -1.0
        pairs.append((last, int(np.argmax(dist)) if len(Z) > 1 else last))
    return np.asarray(pairs, dtype=int).reshape(-1, 2)


def characterize_boundaries(accuracy_of, *, xl, xu, group_slices, accuracy_threshold, n_steps=6):
    """Boundary characterisation (eq. 16): per group, the largest pruning rate above the threshold.

    For each group ``g`` the genome is the original (all genes at ``xu``) except the genes of
    ``g``, which are set to the pruning rate ``p`` (keep ratio ``1 - p`` of their range).
    Assuming accuracy falls monotonically with ``p``, bisection on ``p`` in ``[0, 1]`` keeps
    ``lo`` accurate enough and ``hi`` not (or untested). All groups are bisected at once: every
    step asks ``accuracy_of`` for one batch of ``len(group_slices)`` genomes.

    Args:
        accuracy_of: Callable ``(X: (n, n_var) array) -> (n,) accuracies``; it is where the
            evaluations happen (the GeneCAI algorithm passes one that goes through the problem,
            so they are cached, archived and counted in the budget).
        xl, xu: Gene bounds.
        group_slices: One ``slice`` (or index array) of the genome per group.
        accuracy_threshold: ``acc_thr``: a candidate is acceptable if its accuracy is strictly
            greater.
        n_steps: Bisection steps per group (resolution ``2**-n_steps``).

    Returns:
        ``theta``: array of ``len(group_slices)`` pruning rates in ``[0, 1)``; ``0`` when even
        the smallest tested pruning fails.
    """
    n_steps = check_int("n_steps", n_steps, low=1)
    xl = np.asarray(xl, dtype=float)
    xu = np.asarray(xu, dtype=float)
    n_groups = len(group_slices)
    lo = np.zeros(n_groups)
    hi = np.ones(n_groups)
    for _ in range(n_steps):
        mid = (lo + hi) / 2.0
        X = np.tile(xu, (n_groups, 1))
        for g, sl in enumerate(group_slices):
            X[g, sl] = denormalize(1.0 - mid[g], xl[sl], xu[sl])
        acc = np.asarray(accuracy_of(X), dtype=float).reshape(-1)
        if acc.shape[0] != n_groups:
            raise invalid_value("accuracy_of", f"a callable returning {n_groups} accuracies", acc.shape)
        ok = acc > accuracy_threshold
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return lo


class DirectedSampling(Sampling):
    """GeneCAI's directed initialisation (Sec. 4.4): per gene, pruning rate ~ N(theta/2, theta/2).

    The sampled rate is clipped to ``[0, theta]`` ("the space enclosed by the threshold
    vector"), then turned into a keep ratio ``1 - rate`` of the gene's range. The second
    parameter of the Normal is read as the standard deviation.

    Args:
        theta: Per-group maximal pruning rates (from :func:`characterize_boundaries`), each in
            ``[0, 1]``.
        group_slices: The genome slice of each group (``theta[g]`` applies to all its genes).
        include_original: Also put the unpruned genome first (off by default, as in the paper).
    """

    def __init__(self, *, theta, group_slices, include_original=False):
        super().__init__()
        theta = np.asarray(theta, dtype=float)
        if theta.ndim != 1 or np.any(~np.isfinite(theta)) or np.any(theta < 0) or np.any(theta > 1):
            raise invalid_value("theta", "a 1-D array of pruning rates in [0, 1]", theta)
        if len(group_slices) != len(theta):
            raise invalid_value("group_slices", f"{len(theta)} slices (one per theta)", len(group_slices))
        self.theta = theta
        self.group_slices = list(group_slices)
        self.include_original = check_bool("include_original", include_original)

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        rates = np.zeros((n_samples, problem.n_var))
        for g, sl in enumerate(self.group_slices):
            width = np.zeros(problem.n_var, dtype=bool)
            width[sl] = True
            k = int(width.sum())
            t = self.theta[g]
            rates[:, width] = np.clip(random_state.normal(t / 2.0, t / 2.0, size=(n_samples, k)), 0.0, t)
        if self.include_original and n_samples > 0:
            rates[0] = 0.0
        return denormalize(1.0 - rates, problem.xl, problem.xu)


def _fitness_of(pop):
    """Scores (higher is better) of a single-objective population whose ``F`` is ``-score``."""
    F = np.asarray(pop.get("F"), dtype=float)
    if F.ndim == 2:
        if F.shape[1] != 1:
            raise invalid_value("problem", "a single-objective problem (F = -score)", f"{F.shape[1]} objectives")
        F = F[:, 0]
    return -F


class FitnessProportionateSelection(Selection):
    """Fitness-proportionate sampling with replacement (eq. 10), then GeneCAI's pairing.

    Works on a single-objective population whose ``F`` is ``-score`` (higher score = fitter).
    ``n_select * n_parents`` individuals are drawn with the probabilities of eq. 10; with
    ``pairing="distance"`` (and two parents) they are paired by :func:`distance_pairs`, with
    ``pairing="random"`` in the order drawn.

    Args:
        pairing: ``"distance"`` (GeneCAI) or ``"random"``.
    """

    PAIRINGS = ("distance", "random")

    def __init__(self, *, pairing="distance"):
        super().__init__()
        self.pairing = check_choice("pairing", pairing, self.PAIRINGS)

    def _do(self, problem, pop, n_select, n_parents, *args, random_state=None, **kwargs):
        fitness = _fitness_of(pop)
        p = selection_probabilities(fitness)
        n = n_select * n_parents
        chosen = random_state.choice(len(pop), size=n, replace=True, p=p)
        if self.pairing == "random" or n_parents != 2:
            return chosen.reshape(n_select, n_parents)
        Z = normalize(pop.get("X")[chosen], problem.xl, problem.xu)
        pairs = distance_pairs(Z, fitness[chosen])
        return chosen[pairs][:n_select]


class SwapCrossover(Crossover):
    """GeneCAI's crossover: with probability ``p_cross`` per pair, swap each gene w.p. ``p_swap``.

    Two parents give two children (the parents where no crossover happens).

    Args:
        p_cross: Probability that a pair recombines at all (paper: 0.8).
        p_swap: Per-gene swap probability (paper: 0.2).
    """

    def __init__(self, *, p_cross=0.8, p_swap=0.2):
        self.p_cross = check_probability("p_cross", p_cross)
        self.p_swap = check_probability("p_swap", p_swap)
        super().__init__(2, 2, prob=self.p_cross)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        _, n_matings, n_var = X.shape
        swap = random_state.random((n_matings, n_var)) < self.p_swap
        child1 = np.where(swap, X[1], X[0])
        child2 = np.where(swap, X[0], X[1])
        return np.stack([child1, child2])


def required_p_mutate(div_current, div_threshold, *, n_var, p_tweak, sigma):
    """Solve eq. 15 for ``P_mutate``: the smallest one lifting diversity back to the threshold.

    ``div(P^{t+1}) = div(C^t) + d * P_mutate * P_tweak * sigma^2 >= div_thr`` gives
    ``P_mutate = (div_thr - div(C^t)) / (d * P_tweak * sigma^2)``, clipped to ``[0, 1]``.
    """
    denom = n_var * p_tweak * sigma**2
    if denom <= 0:
        return 1.0
    return float(np.clip((div_threshold - div_current) / denom, 0.0, 1.0))


class DiversityGuidedMutation(Mutation):
    """GeneCAI's mutation (eqs. 12-15): Gaussian tweaks, ``P_mutate`` adapted to the diversity.

    Each individual is mutated with probability ``P_mutate``; in a mutated individual each gene
    is tweaked with probability ``p_tweak`` by ``N(0, sigma)`` (normalised units) and clipped to
    the bounds. Before mutating, the diversity (eq. 12, normalised genes) of the incoming
    (crossed-over) population is measured: when it is at or below ``div_threshold``,
    ``P_mutate`` is raised to the eq. 15 value (never below ``p_mutate``); otherwise it is
    ``p_mutate``. ``div_threshold`` is set by the algorithm to half the initial population's
    diversity; if it is still ``None`` at the first call, half of that population's diversity
    is used.

    Attributes:
        current_p_mutate: ``P_mutate`` used at the last call.
        last_diversity: ``div(C^t)`` measured at the last call.

    Args:
        p_tweak: Per-gene tweak probability (paper: 0.05).
        sigma: Standard deviation of a tweak in normalised units (paper: 0.2).
        p_mutate: Base per-individual mutation probability.
        div_threshold: Diversity threshold (``None``: set later, see above).
    """

    def __init__(self, *, p_tweak=0.05, sigma=0.2, p_mutate=0.4, div_threshold=None):
        self.p_tweak = check_probability("p_tweak", p_tweak)
        self.sigma = check_real("sigma", sigma, low=0, low_open=True)
        self.p_mutate = check_probability("p_mutate", p_mutate)
        self.div_threshold = check_real("div_threshold", div_threshold, low=0, allow_none=True)
        self.current_p_mutate = self.p_mutate
        self.last_diversity = None
        # The per-individual choice is made in _do (P_mutate changes per call); the base class
        # then applies every row.
        super().__init__(prob=1.0)

    def adapt(self, Z):
        """Measure ``div(Z)`` and set :attr:`current_p_mutate` (Algorithm 1, lines 9-10)."""
        div = diversity(Z)
        if self.div_threshold is None:
            self.div_threshold = div / 2.0
        self.last_diversity = div
        p = self.p_mutate
        if div <= self.div_threshold:
            need = required_p_mutate(div, self.div_threshold, n_var=Z.shape[1], p_tweak=self.p_tweak, sigma=self.sigma)
            p = max(p, need)
        self.current_p_mutate = p
        return p

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        X = np.asarray(X, dtype=float)
        Z = normalize(X, problem.xl, problem.xu)
        p_mutate = self.adapt(Z)
        n, d = Z.shape
        individual = random_state.random(n) < p_mutate
        tweak = (random_state.random((n, d)) < self.p_tweak) & individual[:, None]
        noise = random_state.normal(0.0, self.sigma, size=(n, d))
        Z = np.clip(np.where(tweak, Z + noise, Z), 0.0, 1.0)
        return denormalize(Z, problem.xl, problem.xu)
