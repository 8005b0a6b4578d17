"""Document 001's two-step framework as a pymoo ``Algorithm`` (``"two_step"``).

Document 001 alternates (1) a GA search and (2) retraining the elite, then starts the next
search from a population re-seeded around the elite. Here the run is split into ``n_rounds``
rounds of equal share of the budget (generations or evaluations). Each round runs a fresh
inner algorithm (``"nsga2"`` or ``"ga"``, built by its registry factory, so it has the same
operators as when run alone). The elite is the best candidate of the round's final population
by ``elite_scoring`` (feasible candidates first), read from the archive's measurements.

At a round boundary, with ``retrain_steps > 0``:

1. the elite is materialized and fine-tuned by the evaluator
   (:meth:`moprune.Evaluator.finetune_plan`: ``retrain_steps`` SGD steps on its training
   subset, seeded from the run's seed and the round index; unstructured spaces keep their
   pruned weights at zero);
2. its weights are written back into a copy of the current full-size base model
   (:meth:`moprune.space.ChannelSpace.rebase`, :meth:`moprune.space.WeightSpace.rebase`): kept
   channels / weights take the retrained values, pruned ones keep the previous values. The
   genome layout, importance ranking and costs do not change, so a genome keeps its meaning;
3. the problem searches the rebased space from then on (:meth:`moprune.PruningProblem.rebase`:
   ``problem.space``, which the scalarized view shares, and so ``SearchResult.space`` after the
   run), and the evaluator's cache is cleared (a plan key no longer identifies the same weights);
4. the next round starts from the elite and ``pop_size - 1`` perturbations of it
   (:class:`moprune.operators.PerturbationMutation`); the elite is evaluated again, on the new
   weights (one candidate of the budget).

Accuracies in the archive are thus measured on the weights of their round; the accuracy drop
(constraint, scores) stays relative to ``problem.base_accuracy``, the accuracy of the
**original** unpruned model. With ``retrain_steps=0`` (the default without training data) a
round boundary only re-seeds: the elite is carried over with its evaluation and the weights
never change (so too when the elite's own evaluation failed).

Checkpoints: the retrained weights live in ``problem.space``. A pickled :class:`TwoStep` also
carries them (a state dict), and once unpickled it puts them back into the space of the problem
it is resumed on (:meth:`ChannelSpace.rebase` on the unpruned genome), since a run directory's
checkpoint refers to the problem rebuilt from the original model.
"""

import copy
import math

import numpy as np
from pymoo.core.algorithm import Algorithm
from pymoo.core.population import Population
from pymoo.core.termination import Termination

from moprune.algorithms import ALGORITHMS
from moprune.evaluation.evaluator import plan_seed
from moprune.exceptions import MopruneError, TrainingDivergedError, invalid_value
from moprune.logging import get_logger
from moprune.operators.perturbation import PerturbationMutation
from moprune.problem import bind_problem
from moprune.scoring import Scoring, make_scoring
from moprune.validation import (
    check_choice,
    check_dict,
    check_int,
    check_pop_size,
    check_probability,
    check_real,
    conflict,
)

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
        retrain_steps: SGD steps retraining the elite at each round boundary (0: no retraining;
            then the space needs no ``rebase`` and the evaluator no training data).
        retrain_lr: Learning rate of that retraining.
        retrain_batch_size: Batch size of that retraining.
        **kwargs: pymoo ``Algorithm`` arguments.

    Attributes:
        round: Index of the current round.
        elites: The elite genome of every finished round.
        retrain_losses: Mean training loss of every elite retraining.
        inner_algorithm: The pymoo algorithm of the current round.
        perturbation: The :class:`~moprune.operators.PerturbationMutation` that re-seeds a round
            around the elite (set up with the problem).
    """

    def __init__(self, *, pop_size, inner="nsga2", inner_options=None, n_rounds=2, elite_scoring,
                 reseed_rate=0.05, retrain_steps=0, retrain_lr=0.01, retrain_batch_size=128, **kwargs):
        super().__init__(**kwargs)
        self.pop_size = check_pop_size(pop_size, minimum=2)
        self.inner = check_choice("inner", inner, INNER)
        self.inner_options = check_dict("inner_options", inner_options)
        self.n_rounds = check_int("n_rounds", n_rounds, low=1)
        if "sampling" in self.inner_options and self.n_rounds > 1:
            raise conflict(("inner_options", "n_rounds"), "no 'sampling' in inner_options when n_rounds > 1 "
                           "(rounds after the first are re-seeded)", (sorted(self.inner_options), n_rounds))
        if not isinstance(elite_scoring, Scoring):
            raise invalid_value("elite_scoring", "a moprune.scoring.Scoring", elite_scoring)
        self.elite_scoring = elite_scoring
        self.reseed_rate = check_probability("reseed_rate", reseed_rate, allow_zero=False)
        self.retrain_steps = check_int("retrain_steps", retrain_steps, low=0)
        self.retrain_lr = check_real("retrain_lr", retrain_lr, low=0, low_open=True)
        self.retrain_batch_size = check_int("retrain_batch_size", retrain_batch_size, low=1)
        self.round = 0
        self.elites = []
        self.retrain_losses = []
        self.retrain_seed = None
        self.inner_algorithm = None
        self.root = None
        self.perturbation = None

    # ---- inner algorithm

    def _build_inner(self, sampling=None):
        options = dict(self.inner_options)
        if sampling is not None:
            options["sampling"] = sampling
        inner = ALGORITHMS.get(self.inner)(self.root, pop_size=self.pop_size, **options)
        # one evaluation counter for the whole run; each round's generator is seeded from the run's
        inner.setup(self.problem, termination=_OuterProgress(self), evaluator=self.evaluator,
                    seed=int(self.random_state.integers(0, 2 ** 63 - 1)), verbose=False)
        return inner

    def _setup(self, problem, **kwargs):
        self.root = getattr(problem, "parent", problem)
        binary = self.root.space.vtype is bool
        self.perturbation = PerturbationMutation(rate=self.reseed_rate if binary else 1.0, sigma=self.reseed_rate,
                                                 at_least_one=True)
        if self.retrain_steps > 0:
            # drawn only when retraining, so that runs without it keep their random stream
            self.retrain_seed = int(self.random_state.integers(0, 2 ** 63 - 1))

    def _round_over(self):
        if self.round >= self.n_rounds - 1:
            return False
        return float(self.termination.perc) >= (self.round + 1) / self.n_rounds

    # ---- elite and re-seeding

    def elite_index(self, pop):
        """Index in ``pop`` of the best individual by ``elite_scoring`` (feasible ones first)."""
        scores = np.full(len(pop), -np.inf)
        feasible = np.zeros(len(pop), dtype=bool)
        for i, e in enumerate(self.root.latest_evaluations(pop.get("X"))):
            if e is None or not np.isfinite(e.accuracy):
                continue
            scores[i] = self.elite_scoring(e.accuracy, e.macs_ratio, e.params_ratio, e.sparsity,
                                           self.root.base_accuracy)[0]
            feasible[i] = e.feasible
        key = np.where(feasible, scores, -np.inf) if feasible.any() else scores
        return int(np.argmax(key))

    def _measured(self, x):
        """Whether the latest archive entry of genome ``x`` has a finite accuracy."""
        e = self.root.latest_evaluations(x)[0]
        return e is not None and e.error is None and bool(np.isfinite(e.accuracy))

    def reseed(self, elite):
        """``pop_size - 1`` genomes near ``elite`` (repaired) by :attr:`perturbation`.

        Binary genomes flip each bit with probability ``reseed_rate`` (at least one bit each);
        real genomes move every gene by ``N(0, reseed_rate)`` of its range.
        """
        X = np.tile(np.asarray(elite.X), (self.pop_size - 1, 1))
        pop = self.perturbation.do(self.problem, Population.new("X", X), random_state=self.random_state)
        return np.asarray(pop.get("X"))

    # ---- retraining

    def retrain_elite(self, x):
        """Fine-tune the elite genome ``x`` and search a space rebased on its weights from now on.

        Sets ``problem.space`` to ``space.rebase(retrained, plan)`` and clears the evaluator's
        cache (see the module notes).

        Returns:
            The mean training loss of the fine-tuning.

        Raises:
            MopruneError: The loss is not finite.
        """
        plan = self.root.space.decode(x)
        try:
            model, loss = self.root.evaluator.finetune_plan(
                self.root.space, plan, seed=plan_seed(self.retrain_seed, f"two_step/round{self.round}"),
                steps=self.retrain_steps, lr=self.retrain_lr, batch_size=self.retrain_batch_size, optimizer="sgd")
        except TrainingDivergedError as exc:
            raise MopruneError(f"two_step: retraining the elite of round {self.round} diverged ({exc}); "
                               "lower retrain_lr") from exc
        if not math.isfinite(loss):
            raise MopruneError(f"two_step: retraining the elite of round {self.round} gave a loss of {loss}; "
                               "lower retrain_lr")
        self.root.rebase(model, plan)
        self.retrain_losses.append(loss)
        logger.debug("round %d: elite retrained (loss %.4f)", self.round, loss)
        return loss

    # ---- checkpoints

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_restore_pending", None)
        if self.retrain_losses and self.root is not None:
            # a checkpoint may pickle the problem and its space as references to the live objects
            # of the resuming run (moprune.runs), i.e. to the original space: keep the weights
            state["_base_state"] = {k: v.detach().clone() for k, v in self.root.space.model.state_dict().items()}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._restore_pending = state.get("_base_state") is not None

    def _restore_space(self):
        """After unpickling, give the problem a space over the retrained weights again."""
        if not getattr(self, "_restore_pending", False):
            return
        space = self.root.space
        model = copy.deepcopy(space.model)
        model.load_state_dict(self._base_state)
        # rebasing on the unpruned genome writes every tensor back; the restored cache was
        # measured on these weights already
        self.root.rebase(model, space.original(), drop_cache=False)
        self._restore_pending = False
        self._base_state = None

    def result(self):
        self._restore_space()
        return super().result()

    def _next_round(self):
        inner_pop = self.inner_algorithm.pop
        elite = inner_pop[self.elite_index(inner_pop)]
        self.elites.append(np.array(elite.X, copy=True))
        X = self.reseed(elite)
        retrain = self.retrain_steps > 0
        if retrain and not self._measured(elite.X):
            logger.warning("round %d: the elite's evaluation failed; it is not retrained", self.round)
            retrain = False
        if retrain:
            self.retrain_elite(np.asarray(elite.X))
            # its measurement is stale on the new weights: evaluated again, as a new candidate
            carried = Population.new("X", np.asarray(elite.X)[None, :])
        else:
            carried = Population.create(elite.copy())
        seeded = Population.merge(carried, Population.new("X", X))
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
        self._restore_space()
        infills = self._next_round() if self._round_over() else self.inner_algorithm.infill()
        if infills is None or len(infills) == 0:
            # the inner algorithm cannot produce a new candidate (e.g. all duplicates)
            self.termination.force_termination = True
            return None
        return infills

    def _advance(self, infills=None, **kwargs):
        self._restore_space()
        self.inner_algorithm.advance(infills=infills)
        self.pop = self.inner_algorithm.pop


@ALGORITHMS.register("two_step")
def make_two_step(problem, *, pop_size, inner="nsga2", n_rounds=2, reseed_rate=0.05, elite_scoring="weighted",
                  elite_scoring_options=None, retrain_steps=None, retrain_lr=0.01, retrain_batch_size=128,
                  **inner_options):
    """Build document 001's two-step framework (see :class:`TwoStep` and the module notes).

    Args:
        problem: The :class:`moprune.PruningProblem`.
        pop_size: Population size of every round.
        inner: ``"nsga2"`` (default; document 001 is multi-objective) or ``"ga"``.
        n_rounds: Number of search rounds, >= 1 (the budget is split evenly).
        reseed_rate: Closeness of a re-seeded population to the elite, in (0, 1].
        elite_scoring: Name or :class:`~moprune.scoring.Scoring` choosing the elite.
        elite_scoring_options: Arguments of the elite score's constructor (with a name).
        retrain_steps: SGD steps retraining the elite at each round boundary, an int >= 0 (0:
            no retraining, the weights never change). ``None``: 100 when the evaluator has
            training data (``Evaluator(train_data=...)``) and the space has a ``rebase``
            method, else 0.
        retrain_lr: Learning rate of the retraining, > 0.
        retrain_batch_size: Batch size of the retraining, >= 1.
        **inner_options: Options of the inner factory (e.g. ``mutation_rate``; with ``"ga"``,
            ``scoring``); unknown ones raise ``TypeError`` from that factory.

    Returns:
        A :class:`TwoStep`, bound to the problem the inner algorithm searches. After a run with
        retraining, ``problem.space`` (and the result's ``space``) is the rebased space over the
        retrained weights, and the evaluator's cache holds its measurements: another search on
        the same problem starts from those weights (build a new problem for the original ones).
        ``problem.base_accuracy`` stays the original model's.

    Raises:
        TypeError: Unknown options.
        MopruneValueError: A bad option value, or ``retrain_steps > 0`` without training data
            on the evaluator or with a space that cannot be rebased.
    """
    check_choice("inner", inner, INNER)
    check_int("retrain_steps", retrain_steps, low=0, allow_none=True)
    root = getattr(problem, "parent", problem)
    space = getattr(root, "space", None)
    rebasable = callable(getattr(space, "rebase", None))
    has_data = _train_subset(getattr(root, "evaluator", None)) is not None
    if retrain_steps is None:
        retrain_steps = 100 if has_data and rebasable else 0
    if retrain_steps > 0 and not has_data:
        raise conflict(("train_data",), "training data on the Evaluator (Evaluator(train_data=...)) when "
                       f"two_step retrains the elite (retrain_steps={retrain_steps}; 0 turns it off)", None)
    if retrain_steps > 0 and not rebasable:
        raise conflict(("retrain_steps",), f"0 with a space without a rebase() method ({type(space).__name__})",
                       retrain_steps)
    elite_scoring = make_scoring(elite_scoring, **check_dict("elite_scoring_options", elite_scoring_options))
    # builds a first inner algorithm: validates its options now and finds the problem it searches
    probe = ALGORITHMS.get(inner)(problem, pop_size=pop_size, **inner_options)
    algorithm = TwoStep(pop_size=pop_size, inner=inner, inner_options=inner_options, n_rounds=n_rounds,
                        elite_scoring=elite_scoring, reseed_rate=reseed_rate, retrain_steps=retrain_steps,
                        retrain_lr=retrain_lr, retrain_batch_size=retrain_batch_size)
    return bind_problem(algorithm, getattr(probe, "moprune_problem", None) or problem)


make_two_step.passes_options_to = INNER  # its **inner_options are the inner algorithm's (see algorithm_options)


def _train_subset(evaluator):
    """The evaluator's training subset, or ``None`` (no evaluator, no data, or data detached)."""
    try:
        return getattr(evaluator, "train_subset", None)
    except MopruneError:
        return None
