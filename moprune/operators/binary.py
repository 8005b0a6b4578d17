"""Operators on binary genomes (one bit per channel or weight: 1 keeps it, 0 prunes it).

All are pymoo operators that implement only ``_do`` and draw every random number from the
``random_state`` pymoo hands them, so one seed gives one run.

- :class:`NearOriginalSampling`: individuals close to the unpruned model (document 003).
- :class:`BinaryRandomSampling`: uniform random genomes (each individual's keep rate drawn
  uniformly by default, so the population spans all model sizes).
- :class:`AdaptiveBitflipMutation`: bit-flip whose per-bit rate decays over the run
  (document 002's adaptive mutation rate).
- :class:`BinaryUniformCrossover` (document 000) and :class:`BinarySinglePointCrossover`
  (document 003).

Constraints such as "at least one channel per group" are not handled here: algorithms apply
``space.repair()``.
"""

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.mutation import Mutation
from pymoo.core.sampling import Sampling

from moprune.validation import check_bool, check_choice, check_probability, conflict

_SCHEDULES = ("exponential", "linear", "constant")


def _original(problem, n_var):
    space = getattr(problem, "space", None)
    if space is not None:
        return np.asarray(space.original(), dtype=bool)
    return np.ones(n_var, dtype=bool)


class NearOriginalSampling(Sampling):
    """Initial individuals close to the unpruned model (document 003, "comparable to the original").

    Every bit of the original genome is kept with probability ``keep_prob`` (and pruned
    otherwise).

    Args:
        keep_prob: Probability that a gene stays as in the original model, in [0, 1].
        include_original: Make the first individual the unpruned model itself.
    """

    def __init__(self, *, keep_prob=0.9, include_original=False):
        super().__init__()
        self.keep_prob = check_probability("keep_prob", keep_prob)
        self.include_original = check_bool("include_original", include_original)

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        original = _original(problem, problem.n_var)
        keep = random_state.random((n_samples, problem.n_var)) < self.keep_prob
        X = np.where(keep, original[None, :], ~original[None, :])
        if self.include_original and n_samples > 0:
            X[0] = original
        return X.astype(bool)


class BinaryRandomSampling(Sampling):
    """Uniform random binary genomes.

    Args:
        keep_prob: Probability that a bit is 1. ``None`` (default) draws one keep rate per
            individual uniformly from ``[min_keep, max_keep]``, so the population covers small
            and large models alike instead of clustering at half size.
        min_keep, max_keep: Range of the per-individual keep rate when ``keep_prob`` is ``None``.
    """

    def __init__(self, *, keep_prob=None, min_keep=0.0, max_keep=1.0):
        super().__init__()
        self.keep_prob = check_probability("keep_prob", keep_prob, allow_none=True)
        self.min_keep = check_probability("min_keep", min_keep)
        self.max_keep = check_probability("max_keep", max_keep)
        if self.min_keep > self.max_keep:
            raise conflict(("min_keep", "max_keep"), "min_keep <= max_keep", (min_keep, max_keep))

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        if self.keep_prob is None:
            rate = random_state.uniform(self.min_keep, self.max_keep, size=(n_samples, 1))
        else:
            rate = self.keep_prob
        return random_state.random((n_samples, problem.n_var)) < rate


def run_progress(algorithm):
    """Fraction of the run done, in [0, 1], read from the algorithm's termination."""
    termination = getattr(algorithm, "termination", None)
    perc = getattr(termination, "perc", 0.0) if termination is not None else 0.0
    try:
        perc = float(perc)
    except (TypeError, ValueError):
        return 0.0
    return min(max(perc, 0.0), 1.0) if np.isfinite(perc) else 0.0


class AdaptiveBitflipMutation(Mutation):
    """Bit-flip mutation with a per-bit rate that decays over the run (document 002).

    The rate goes from ``rate`` at the start to ``final_rate`` at the end, following
    ``schedule``; the progress is read from the algorithm's termination (generations or
    evaluations done), so the schedule fits both ``n_gen`` and ``n_evals`` budgets.

    Args:
        rate: Initial per-bit flip probability (default ``min(0.5, 2 / n_var)``).
        final_rate: Final per-bit flip probability (default ``rate / 4``).
        schedule: ``"exponential"`` (geometric decay), ``"linear"`` or ``"constant"``.
        prob: Probability that an individual is mutated at all.
    """

    def __init__(self, *, rate=None, final_rate=None, schedule="exponential", prob=1.0):
        super().__init__(prob=check_probability("prob", prob))
        self.rate = check_probability("rate", rate, allow_zero=False, allow_none=True)
        self.final_rate = check_probability("final_rate", final_rate, allow_zero=False, allow_none=True)
        self.schedule = check_choice("schedule", schedule, _SCHEDULES)

    def current_rate(self, n_var, progress):
        """The per-bit flip probability at ``progress`` in [0, 1]."""
        start = self.rate if self.rate is not None else min(0.5, 2.0 / max(n_var, 1))
        end = self.final_rate if self.final_rate is not None else start / 4.0
        if self.schedule == "constant":
            return start
        if self.schedule == "linear":
            return start + (end - start) * progress
        return start * (end / start) ** progress

    def _do(self, problem, X, *args, random_state=None, algorithm=None, **kwargs):
        X = np.asarray(X, dtype=bool)
        rate = self.current_rate(problem.n_var, run_progress(algorithm))
        flip = random_state.random(X.shape) < rate
        return np.logical_xor(X, flip)


class BinaryUniformCrossover(Crossover):
    """Uniform crossover (document 000): each gene comes from either parent with equal odds.

    Two parents give two complementary children.

    Args:
        prob: Probability that a mating is crossed (otherwise the children copy the parents).
        swap_prob: Probability that a gene is swapped between the children.
    """

    def __init__(self, *, prob=0.9, swap_prob=0.5):
        super().__init__(2, 2, prob=check_probability("prob", prob))
        self.swap_prob = check_probability("swap_prob", swap_prob)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        _, n_matings, n_var = X.shape
        swap = random_state.random((n_matings, n_var)) < self.swap_prob
        a, b = X[0], X[1]
        return np.stack([np.where(swap, b, a), np.where(swap, a, b)])


class BinarySinglePointCrossover(Crossover):
    """Single-point crossover (document 003): the genes after a random cut point are exchanged.

    Args:
        prob: Probability that a mating is crossed (otherwise the children copy the parents).
    """

    def __init__(self, *, prob=0.9):
        super().__init__(2, 2, prob=check_probability("prob", prob))

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        _, n_matings, n_var = X.shape
        if n_var < 2:
            return X.copy()
        cut = random_state.integers(1, n_var, size=(n_matings, 1))
        after = np.arange(n_var)[None, :] >= cut
        a, b = X[0], X[1]
        return np.stack([np.where(after, b, a), np.where(after, a, b)])
