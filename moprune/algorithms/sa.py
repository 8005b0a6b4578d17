"""Simulated annealing (document 002) as a pymoo ``Algorithm`` (``"sa"``).

``pop_size`` independent chains start from the unpruned genome (evaluated once) and each
proposes one neighbour per iteration, so one iteration is one batch of ``pop_size``
evaluations. A chain moves to its proposal when the energy ``E = -score`` drops, or with
probability ``exp(-dE / T)`` otherwise.

Schedules follow the run's progress ``s`` in [0, 1] read from the termination (generations or
evaluations done, so they fit both budgets):

- temperature ``T = T0 * (T_end / T0) ** s`` (geometric cooling);
- adaptive mutation rate ``r = max(r_min, r0 * (1 - s))`` (document 002: broad exploration
  first, fine tuning at the end). A binary proposal flips each active gene with probability
  ``r`` (at least one); a real one moves each active gene with probability ``r`` (at least one)
  by ``N(0, r)`` of its range: :class:`moprune.operators.PerturbationMutation` (:attr:`proposal`).

Document 002 penalises a loss above ``max_loss`` heavily: each point of accuracy drop above
``max_loss`` adds ``loss_penalty`` to the energy.

Layer-wise mode (document 002's "layer-wise evolution"): the groups of
``space.group_slices`` are annealed one after the other, each for an equal share of the run,
with only that group's genes mutable and the schedules restarting per group. The max-loss
warm-up raises the allowed accuracy drop linearly through the groups: while annealing group
``l`` (0-based, of ``L``) the allowed drop is ``max_loss * (l + 1) / L`` points. Document 002
squares the loss difference; here the scoring supplies the accuracy term (it is not squared)
and the penalty the excessive-loss term.
"""

import math

import numpy as np
from pymoo.core.population import Population

from moprune.algorithms import ALGORITHMS
from moprune.algorithms.base import SeedAlgorithm, accuracy_drop_of
from moprune.operators.perturbation import PerturbationMutation
from moprune.problem import bind_problem
from moprune.scoring import DEFAULT_ACCURACY_DROP, WeightedScore, make_scoring
from moprune.validation import check_bool, check_pop_size, check_probability, check_real

__all__ = ["SimulatedAnnealing", "make_sa"]


class SimulatedAnnealing(SeedAlgorithm):
    """Simulated annealing over genomes, optionally layer by layer.

    Args:
        pop_size: Number of independent chains (one proposal each per iteration).
        initial_temperature: ``T0`` > 0, in units of the score.
        final_temperature: ``T_end`` in ``(0, T0]``.
        mutation_rate: ``r0`` in (0, 1] (document 002: 0.15).
        min_mutation_rate: ``r_min`` in [0, r0].
        layerwise: Anneal the groups one after the other.
        max_loss: Accuracy drop (points, in [0, 100]) allowed; in layer-wise mode, the one
            allowed after the last group.
        loss_penalty: Energy added per point of drop above the allowed one.
        scoring: The score whose negative is the energy.
        **kwargs: pymoo ``Algorithm`` arguments.

    Attributes:
        best: The individual of lowest energy ever evaluated (energy as defined while it was
            evaluated, so in layer-wise mode with that stage's allowance).
        best_energy: Its energy.
        state_X, state_E: Current genome and energy of every chain.
        n_accepted: Proposals accepted so far.
        stage: Index of the group being annealed (layer-wise mode).
        proposal: The :class:`~moprune.operators.PerturbationMutation` making each chain's
            neighbour (rate and mutable genes set per iteration).
    """

    def __init__(self, *, pop_size, initial_temperature=0.05, final_temperature=1e-4, mutation_rate=0.15,
                 min_mutation_rate=0.01, layerwise=False, max_loss=DEFAULT_ACCURACY_DROP, loss_penalty=1.0, scoring,
                 **kwargs):
        super().__init__(scoring=scoring, **kwargs)
        self.pop_size = check_pop_size(pop_size)
        self.initial_temperature = check_real("initial_temperature", initial_temperature, low=0, low_open=True)
        self.final_temperature = check_real("final_temperature", final_temperature, low=0, low_open=True,
                                            high=self.initial_temperature)
        self.mutation_rate = check_probability("mutation_rate", mutation_rate, allow_zero=False)
        self.min_mutation_rate = check_real("min_mutation_rate", min_mutation_rate, low=0,
                                            high=self.mutation_rate)
        self.layerwise = check_bool("layerwise", layerwise)
        self.max_loss = check_real("max_loss", max_loss, low=0, high=100, unit="accuracy points")
        self.loss_penalty = check_real("loss_penalty", loss_penalty, low=0)
        self.state_X = None
        self.state_E = None
        self.state_drop = None
        self.n_accepted = 0
        self.stage = 0
        self.best_energy = math.inf
        self._schedule = (0, 0.0)
        # each chain's neighbour: rate and mutable genes are set per iteration (schedule, layer)
        self.proposal = PerturbationMutation(at_least_one=True)

    # ---- schedules

    def progress(self):
        """Fraction of the run done, in [0, 1]."""
        perc = float(getattr(self.termination, "perc", 0.0) or 0.0)
        return min(max(perc, 0.0), 1.0) if math.isfinite(perc) else 0.0

    def _stage_and_local_progress(self):
        s = self.progress()
        if not self.layerwise:
            return 0, s
        n = len(self.group_slices())
        stage = min(n - 1, int(s * n))
        return stage, min(1.0, s * n - stage)

    def temperature(self, local_progress):
        """``T0 * (T_end / T0) ** s``."""
        return self.initial_temperature * (self.final_temperature / self.initial_temperature) ** local_progress

    def rate(self, local_progress):
        """``max(r_min, r0 * (1 - s))``."""
        return max(self.min_mutation_rate, self.mutation_rate * (1.0 - local_progress))

    def active_genes(self, stage):
        """Boolean mask of the genes that may move: group ``stage`` in layer-wise mode, else all."""
        active = np.zeros(self.problem.n_var, dtype=bool)
        if self.layerwise:
            active[self.group_slices()[stage]] = True
        else:
            active[:] = True
        return active

    def allowed_drop(self, stage):
        """The max-loss warm-up: allowed drop (points) while annealing group ``stage``."""
        return self.max_loss * (stage + 1) / len(self.group_slices())

    # ---- energy

    def _drops(self, pop):
        acc = self.accuracy_of(pop)
        base = float(self.pruning_problem.base_accuracy)
        drop = 100.0 * (base - acc)
        return np.where(np.isfinite(drop), drop, 100.0)

    def energy(self, F, drop, stage):
        """``-score`` plus ``loss_penalty`` per point of accuracy drop above the allowed one.

        The allowed drop is ``max_loss``, or the warm-up's :meth:`allowed_drop` in layer-wise
        mode.
        """
        E = np.asarray(F, dtype=float).reshape(-1)
        E = np.where(np.isfinite(E), E, np.inf)
        allowed = self.allowed_drop(stage) if self.layerwise else self.max_loss
        return E + self.loss_penalty * np.maximum(0.0, drop - allowed)

    def note(self, pop):
        """Best-ever tracking happens by energy in :meth:`_note_energy`, not by ``F``."""

    def _note_energy(self, pop, E):
        i = int(np.argmin(E))
        if E[i] < self.best_energy:
            self.best_energy = float(E[i])
            self.best = pop[i]

    # ---- pymoo hooks

    def _initial_genomes(self):
        return self.repair_X(self.original()[None, :])

    def _initialize_advance(self, infills=None, **kwargs):
        self.pop = infills
        drop = self._drops(infills)
        F = infills.get("F")[:, 0]
        self.state_X = np.repeat(np.asarray(infills.get("X")), self.pop_size, axis=0)
        self.state_F = np.repeat(F, self.pop_size)
        self.state_drop = np.repeat(drop, self.pop_size)
        self.state_E = self.energy(self.state_F, self.state_drop, 0)
        self._note_energy(infills, self.energy(F, drop, 0))

    def _next_genomes(self):
        stage, local = self._stage_and_local_progress()
        if stage != self.stage:
            self.stage = stage
            self.state_E = self.energy(self.state_F, self.state_drop, stage)
        active = self.active_genes(stage)
        self._schedule = (stage, local)
        rate = self.rate(local)
        pop = self.proposal.do(self.problem, Population.new("X", self.state_X), random_state=self.random_state,
                               rate=rate, sigma=rate, genes=active)
        return np.asarray(pop.get("X"))

    def _advance(self, infills=None, **kwargs):
        if infills is None or len(infills) == 0:
            return
        stage, local = self._schedule
        n = len(infills)
        F = infills.get("F")[:, 0]
        drop = self._drops(infills)
        E = self.energy(F, drop, stage)
        T = self.temperature(local)
        dE = E - self.state_E[:n]
        u = self.random_state.random(n)
        with np.errstate(over="ignore", invalid="ignore"):
            accept = (dE <= 0) | (u < np.exp(-np.where(np.isfinite(dE), dE, np.inf) / T))
        idx = np.flatnonzero(accept)
        self.state_X[idx] = np.asarray(infills.get("X"))[idx]
        self.state_F[idx] = F[idx]
        self.state_drop[idx] = drop[idx]
        self.state_E[idx] = E[idx]
        self.n_accepted += len(idx)
        self.pop = infills
        self._note_energy(infills, E)


@ALGORITHMS.register("sa")
def make_sa(problem, *, pop_size, initial_temperature=0.05, final_temperature=1e-4, mutation_rate=0.15,
            min_mutation_rate=0.01, layerwise=False, max_loss=None, loss_penalty=1.0, scoring=None):
    """Build simulated annealing (see :class:`SimulatedAnnealing`).

    Args:
        problem: The :class:`moprune.PruningProblem`.
        pop_size: Number of independent chains (1 is classic SA; more chains share batches).
        initial_temperature: ``T0`` > 0 (score units).
        final_temperature: ``T_end`` in (0, T0].
        mutation_rate: Initial per-gene mutation rate in (0, 1] (document 002: 0.15).
        min_mutation_rate: Floor of the adaptive rate, in [0, mutation_rate].
        layerwise: Anneal one group (layer) at a time, with the max-loss warm-up.
        max_loss: Final allowed accuracy drop in points, in [0, 100] (default: the problem's
            ``max_accuracy_drop``, else 2).
        loss_penalty: Energy per point of drop above the warm-up's allowance, >= 0.
        scoring: A :class:`~moprune.scoring.Scoring` or registry name (default: accuracy plus
            sparsity, ``WeightedScore(w_acc=1, w_macs=0, w_sparsity=1)``: document 002 balances
            loss against sparsity).

    Returns:
        A :class:`SimulatedAnnealing`.
    """
    if max_loss is None:
        max_loss = accuracy_drop_of(problem)
    scoring = WeightedScore(w_acc=1.0, w_macs=0.0, w_sparsity=1.0) if scoring is None else make_scoring(scoring)
    algorithm = SimulatedAnnealing(pop_size=pop_size, initial_temperature=initial_temperature,
                                   final_temperature=final_temperature, mutation_rate=mutation_rate,
                                   min_mutation_rate=min_mutation_rate, layerwise=layerwise, max_loss=max_loss,
                                   loss_penalty=loss_penalty, scoring=scoring)
    return bind_problem(algorithm, problem.scalarized(scoring))
