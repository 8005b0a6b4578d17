"""Document 002's GA (``"layerwise_ga"``): an elitist GA that can evolve one layer at a time.

Document 002 runs its GA and its simulated annealing the same way, so this GA shares
:class:`~moprune.algorithms.sa.SimulatedAnnealing`'s schedules and energy: the energy is
``-score`` plus ``loss_penalty`` per point of accuracy drop above the allowed one, the mutation
rate decays from ``mutation_rate`` to ``min_mutation_rate`` over each stage, and in layer-wise
mode the groups of ``space.group_slices`` are evolved one after the other, each for an equal
share of the budget, with the max-loss warm-up (``max_loss * (l + 1) / L`` points while
evolving group ``l`` of ``L``).

Each generation keeps the ``n_elites`` lowest-energy individuals and fills the rest of the
population with offspring: two parents by tournament on energy, uniform crossover of the
mutable genes (probability ``crossover_prob``), then a
:class:`~moprune.operators.PerturbationMutation` of the mutable genes. The run starts from the
unpruned genome; when a new layer's stage begins, the whole population restarts from the best
genome found so far (document 002 evolves each layer's mask from the best of the layer before).
Document 002's setting: population 12, 2 elites, 20 generations per layer.
"""

import numpy as np

from moprune.algorithms import ALGORITHMS
from moprune.algorithms.base import accuracy_drop_of
from moprune.algorithms.sa import SimulatedAnnealing
from moprune.problem import bind_problem
from moprune.scoring import WeightedScore, make_scoring
from moprune.validation import check_int, check_pop_size, check_probability

__all__ = ["LayerwiseGA", "make_layerwise_ga"]


class LayerwiseGA(SimulatedAnnealing):
    """Elitist GA on simulated annealing's energy, optionally one layer (group) at a time.

    Args:
        pop_size: Population size (>= 2).
        n_elites: Lowest-energy individuals carried over each generation, in [1, pop_size - 1].
        tournament_size: Individuals per parent tournament.
        crossover_prob: Probability that a child mixes two parents (else it copies the first).
        mutation_rate, min_mutation_rate, layerwise, max_loss, loss_penalty, scoring: As in
            :class:`~moprune.algorithms.sa.SimulatedAnnealing`.
    """

    def __init__(self, *, pop_size, n_elites=2, tournament_size=2, crossover_prob=0.9, **kwargs):
        pop_size = check_pop_size(pop_size, minimum=2)
        super().__init__(pop_size=pop_size, initial_temperature=1.0, final_temperature=1.0, **kwargs)
        self.n_elites = check_int("n_elites", n_elites, low=1, high=pop_size - 1)
        self.tournament_size = check_int("tournament_size", tournament_size, low=1)
        self.crossover_prob = check_probability("crossover_prob", crossover_prob)

    def _restart_from_best(self):
        """Every individual becomes the lowest-energy one (a new layer starts from the best genome)."""
        i = int(np.argmin(self.state_E))
        for name in ("state_X", "state_F", "state_drop", "state_E"):
            values = getattr(self, name)
            values[:] = values[i]

    def _tournament(self, n):
        """``n`` parent indices, each the lowest-energy of ``tournament_size`` drawn at random."""
        entrants = self.random_state.integers(0, len(self.state_E), size=(n, self.tournament_size))
        return entrants[np.arange(n), np.argmin(self.state_E[entrants], axis=1)]

    def _next_genomes(self):
        from pymoo.core.population import Population

        stage, local = self._stage_and_local_progress()
        if stage != self.stage:
            self.stage = stage
            self.state_E = self.energy(self.state_F, self.state_drop, stage)
            if self.layerwise:
                self._restart_from_best()
        active = self.active_genes(stage)
        self._schedule = (stage, local)
        n = self.pop_size - self.n_elites
        first, second = self._tournament(n), self._tournament(n)
        children = self.state_X[first].copy()
        cross = self.random_state.random(n) < self.crossover_prob
        take = (self.random_state.random(children.shape) < 0.5) & active & cross[:, None]
        children[take] = self.state_X[second][take]
        rate = self.rate(local)
        pop = self.proposal.do(self.problem, Population.new("X", children), random_state=self.random_state,
                               rate=rate, sigma=rate, genes=active)
        return np.asarray(pop.get("X"))

    def _advance(self, infills=None, **kwargs):
        if infills is None or len(infills) == 0:
            return
        stage, _ = self._schedule
        F = infills.get("F")[:, 0]
        drop = self._drops(infills)
        E = self.energy(F, drop, stage)
        elites = np.argsort(self.state_E, kind="stable")[: self.pop_size - len(infills)]
        X = np.concatenate([self.state_X[elites], np.asarray(infills.get("X"))])
        self.state_X = X.astype(self.state_X.dtype, copy=False)
        self.state_F = np.concatenate([self.state_F[elites], F])
        self.state_drop = np.concatenate([self.state_drop[elites], drop])
        self.state_E = np.concatenate([self.state_E[elites], E])
        self.n_accepted += len(infills)
        self._note_energy(infills, E)
        self.pop = infills


@ALGORITHMS.register("layerwise_ga")
def make_layerwise_ga(problem, *, pop_size, n_elites=2, tournament_size=2, crossover_prob=0.9, mutation_rate=0.15,
                      min_mutation_rate=0.01, layerwise=True, max_loss=None, loss_penalty=1.0, scoring=None):
    """Build document 002's GA (see :class:`LayerwiseGA`).

    Args:
        problem: The :class:`moprune.PruningProblem`.
        pop_size: Population size (document 002: 12).
        n_elites: Individuals carried over each generation (document 002: 2).
        tournament_size: Individuals per parent tournament.
        crossover_prob: Probability that a child mixes two parents.
        mutation_rate: Initial per-gene mutation rate in (0, 1] (document 002: 0.15).
        min_mutation_rate: Floor of the adaptive rate.
        layerwise: Evolve one group (layer) at a time, with the max-loss warm-up.
        max_loss: Final allowed accuracy drop in points (default: the problem's
            ``max_accuracy_drop``, else 2).
        loss_penalty: Energy per point of drop above the allowance, >= 0.
        scoring: A :class:`~moprune.scoring.Scoring` or registry name (default: accuracy plus
            sparsity, as ``"sa"``).

    Returns:
        A :class:`LayerwiseGA`.
    """
    if max_loss is None:
        max_loss = accuracy_drop_of(problem)
    scoring = WeightedScore(w_acc=1.0, w_macs=0.0, w_sparsity=1.0) if scoring is None else make_scoring(scoring)
    algorithm = LayerwiseGA(pop_size=pop_size, n_elites=n_elites, tournament_size=tournament_size,
                            crossover_prob=crossover_prob, mutation_rate=mutation_rate,
                            min_mutation_rate=min_mutation_rate, layerwise=layerwise, max_loss=max_loss,
                            loss_penalty=loss_penalty, scoring=scoring)
    return bind_problem(algorithm, problem.scalarized(scoring))
