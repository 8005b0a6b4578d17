"""Document 001's two-step framework as a pymoo ``Algorithm`` (``"two_step"``).

Document 001 alternates (1) a GA search and (2) retraining the elite, then starts the next
search from a population re-seeded around the elite. Here the run is split into ``n_rounds``
rounds of equal share of the budget (generations or evaluations). Each round runs a fresh
inner algorithm (``"nsga2"`` or ``"ga"``, built by its registry factory, so it has the same
operators as when run alone); every round after the first starts from the previous round's
elite (kept with its evaluation, not evaluated again) and ``pop_size - 1`` perturbations of
it. The elite is the best candidate of the round's final population by ``elite_scoring``
(feasible candidates first), read from the archive's measurements.

What "retrain the elite" means here (the honest part): the base model is **not** replaced by
the retrained elite between rounds. In a channel space a genome indexes the channels of the
base model; a retrained pruned model would be a different model with a different space, and
the archive of one search would then mix accuracies measured on different weights (and the
evaluation cache, keyed by plan, would return stale values). Instead:

- retraining *during* the search is the evaluator's job: an :class:`moprune.Evaluator` built
  with ``finetune=...`` fine-tunes every candidate (the elite included) before measuring it,
  which is document 000's fine-tune-in-the-loop and the per-candidate form of document 001's
  step two;
- retraining the final pick is :func:`moprune.retrain`, after the search.

So a round boundary re-seeds the population near the elite genome; nothing else changes.
"""

import numpy as np
from pymoo.core.algorithm import Algorithm
from pymoo.core.population import Population
from pymoo.core.termination import Termination

from moprune.algorithms import ALGORITHMS
from moprune.algorithms.base import check_choice, check_int, check_real, reject_unknown
from moprune.exceptions import invalid_value
from moprune.logging import get_logger
from moprune.problem import bind_problem
from moprune.scoring import Scoring, make_scoring

__all__ = ["TwoStep", "make_two_step"]

logger = get_logger("algorithms.two_step")

INNER = ("nsga2", "ga")


class _OuterProgress(Termination):
    """An inner algorithm's termination: never stops it, reports the whole run's progress.

    Operators that read ``algorithm.termination.perc`` (e.g. the adaptive bit-flip mutation)
    thus follow the progress of the two-step run, not of the current round.
    """

    def __init__(self, outer):
        self.outer = outer
        super().__init__()

    @property
    def perc(self):
        return min(float(self.outer.termination.perc), 1.0 - 1e-12)

    @perc.setter
    def perc(self, value):
        pass  # the outer run owns the progress

    def _update(self, algorithm):
        return 0.0


class TwoStep(Algorithm):
    """Rounds of an inner search, each re-seeded around the previous round's elite.

    Args:
        pop_size: Population size of every round.
        inner: ``"nsga2"`` or ``"ga"``.
        inner_options: Options of the inner algorithm's factory (a dict).
        n_rounds: Number of rounds, >= 1.
        elite_scoring: The :class:`~moprune.scoring.Scoring` that picks the elite.
        reseed_rate: Closeness of the re-seeded population: per-gene flip probability for
            binary genomes, standard deviation (in units of the gene range) for real ones.
        **kwargs: pymoo ``Algorithm`` arguments.

    Attributes:
        round: Index of the current round.
        elites: The elite genome of every finished round.
        inner_algorithm: The pymoo algorithm of the current round.
    """

    def __init__(self, *, pop_size, inner="nsga2", inner_options=None, n_rounds=2, elite_scoring,
                 reseed_rate=0.05, **kwargs):
        super().__init__(**kwargs)
        self.pop_size = check_int("pop_size", pop_size, low=2)
        self.inner = check_choice("inner", inner, INNER)
        if inner_options is not None and not isinstance(inner_options, dict):
            raise invalid_value("inner_options", "None or a dict of the inner factory's options", inner_options)
        self.inner_options = dict(inner_options or {})
        if "sampling" in self.inner_options and n_rounds > 1:
            raise invalid_value("inner_options", "no 'sampling' (rounds after the first are re-seeded)",
                                sorted(self.inner_options))
        self.n_rounds = check_int("n_rounds", n_rounds, low=1)
        if not isinstance(elite_scoring, Scoring):
            raise invalid_value("elite_scoring", "a moprune.scoring.Scoring", elite_scoring)
        self.elite_scoring = elite_scoring
        self.reseed_rate = check_real("reseed_rate", reseed_rate, low=0.0, high=1.0, low_open=True)
        self.round = 0
        self.elites = []
        self.inner_algorithm = None
        self.root = None

    # ---- inner algorithm

    def _build_inner(self, sampling=None):
        options = dict(self.inner_options)
        if sampling is not None:
            options["sampling"] = sampling
        inner = ALGORITHMS.get(self.inner)(self.root, pop_size=self.pop_size, **options)
        inner.setup(self.problem, termination=_OuterProgress(self), seed=0, verbose=False)
        # one generator and one evaluation counter for the whole run
        inner.random_state = self.random_state
        inner.evaluator = self.evaluator
        return inner

    def _setup(self, problem, **kwargs):
        self.root = getattr(problem, "parent", problem)

    def _round_over(self):
        if self.round >= self.n_rounds - 1:
            return False
        return float(self.termination.perc) >= (self.round + 1) / self.n_rounds

    # ---- elite and re-seeding

    def elite_index(self, pop):
        """Index in ``pop`` of the best individual by ``elite_scoring`` (feasible ones first)."""
        by_genome = {}
        for e in self.root.archive:
            by_genome[np.asarray(e.genome).tobytes()] = e
        scores = np.full(len(pop), -np.inf)
        feasible = np.zeros(len(pop), dtype=bool)
        X = pop.get("X")
        for i, x in enumerate(X):
            e = by_genome.get(self.root._as_genomes(x)[0].tobytes())
            if e is None or not np.isfinite(e.accuracy):
                continue
            scores[i] = self.elite_scoring(e.accuracy, e.macs_ratio, e.params_ratio, e.sparsity,
                                           self.root.base_accuracy)[0]
            feasible[i] = e.feasible
        key = np.where(feasible, scores, -np.inf) if feasible.any() else scores
        return int(np.argmax(key))

    def reseed(self, elite):
        """``pop_size - 1`` genomes near ``elite`` (repaired), each differing in at least one gene."""
        rng = self.random_state
        n, n_var = self.pop_size - 1, self.problem.n_var
        x = np.asarray(elite.X)
        binary = self.root.space.vtype is bool
        if binary:
            flip = rng.random((n, n_var)) < self.reseed_rate
            flip[np.arange(n), rng.integers(0, n_var, size=n)] = True
            X = np.where(flip, ~x.astype(bool), x.astype(bool))
        else:
            xl, xu = np.asarray(self.problem.xl, dtype=float), np.asarray(self.problem.xu, dtype=float)
            X = np.clip(x + rng.normal(0.0, self.reseed_rate, size=(n, n_var)) * (xu - xl), xl, xu)
        pop = Population.new("X", X)
        pop = self.root.space.repair().do(self.problem, pop)
        return np.asarray(pop.get("X"))

    def _next_round(self):
        inner_pop = self.inner_algorithm.pop
        elite = inner_pop[self.elite_index(inner_pop)]
        self.elites.append(np.array(elite.X, copy=True))
        X = self.reseed(elite)
        seeded = Population.merge(Population.create(elite.copy()), Population.new("X", X))
        self.round += 1
        logger.debug("round %d starts from an elite with F=%s", self.round, np.round(elite.F, 4))
        self.inner_algorithm = self._build_inner(sampling=seeded)
        return self.inner_algorithm.infill()

    # ---- pymoo hooks

    def _initialize_infill(self):
        self.inner_algorithm = self._build_inner()
        return self.inner_algorithm.infill()

    def _initialize_advance(self, infills=None, **kwargs):
        self.inner_algorithm.advance(infills=infills)
        self.pop = self.inner_algorithm.pop

    def _infill(self):
        infills = self._next_round() if self._round_over() else self.inner_algorithm.infill()
        if infills is None or len(infills) == 0:
            # the inner algorithm cannot produce a new candidate (e.g. all duplicates)
            self.termination.force_termination = True
            return None
        return infills

    def _advance(self, infills=None, **kwargs):
        self.inner_algorithm.advance(infills=infills)
        self.pop = self.inner_algorithm.pop


@ALGORITHMS.register("two_step")
def make_two_step(problem, *, pop_size, inner="nsga2", n_rounds=2, reseed_rate=0.05, elite_scoring="weighted",
                  elite_scoring_options=None, **inner_options):
    """Build document 001's two-step framework (see :class:`TwoStep` and the module notes).

    Args:
        problem: The :class:`moprune.PruningProblem`.
        pop_size: Population size of every round.
        inner: ``"nsga2"`` (default; document 001 is multi-objective) or ``"ga"``.
        n_rounds: Number of search rounds, >= 1 (the budget is split evenly).
        reseed_rate: Closeness of a re-seeded population to the elite, in (0, 1].
        elite_scoring: Name or :class:`~moprune.scoring.Scoring` choosing the elite.
        elite_scoring_options: Arguments of the elite score's constructor (with a name).
        **inner_options: Options of the inner factory (e.g. ``mutation_rate``; with ``"ga"``,
            ``scoring``); unknown ones raise ``TypeError`` from that factory.

    Returns:
        A :class:`TwoStep`, bound to the problem the inner algorithm searches.

    Raises:
        TypeError: Unknown options.
        MopruneValueError: A bad option value.
    """
    check_choice("inner", inner, INNER)
    if elite_scoring_options is not None and not isinstance(elite_scoring_options, dict):
        raise invalid_value("elite_scoring_options", "None or a dict", elite_scoring_options)
    if isinstance(elite_scoring, Scoring):
        reject_unknown(elite_scoring_options or {}, "two_step elite_scoring_options with a Scoring instance")
    else:
        elite_scoring = make_scoring(elite_scoring, **(elite_scoring_options or {}))
    # builds a first inner algorithm: validates its options now and finds the problem it searches
    probe = ALGORITHMS.get(inner)(problem, pop_size=pop_size, **inner_options)
    algorithm = TwoStep(pop_size=pop_size, inner=inner, inner_options=inner_options, n_rounds=n_rounds,
                        elite_scoring=elite_scoring, reseed_rate=reseed_rate)
    return bind_problem(algorithm, getattr(probe, "moprune_problem", None) or problem)
