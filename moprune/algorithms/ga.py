"""``"ga"``: single-objective genetic algorithm on a score (documents 000, 003, 004).

Tournament selection, crossover, adaptive bit-flip mutation and elitism (document 000), on
``-score`` of a :class:`moprune.scoring.Scoring`: ``"weighted"`` (document 000, eq. 1),
``"threshold"`` (document 003, Algorithm 1) or ``"genecai"`` (document 004, eq. 9).
"""

import numpy as np
from pymoo.algorithms.soo.nonconvex.ga import GA, FitnessSurvival
from pymoo.core.population import Population
from pymoo.core.survival import Survival
from pymoo.operators.selection.tournament import TournamentSelection

from moprune.algorithms import ALGORITHMS
from moprune.operators import default_operators
from moprune.problem import bind_problem
from moprune.validation import check_bool, check_dict, check_int, check_pop_size


def _order(pop):
    """Indices of ``pop`` from best to worst: feasible first (lowest CV), then lowest F (stable)."""
    F, cv = pop.get("F", "CV")
    return np.lexsort([np.arange(len(pop)), F[:, 0], cv[:, 0]])


def tournament(pop, P, random_state=None, **kwargs):
    """The winner of each row of ``P`` (any tournament size): lowest CV, then lowest F, then first."""
    F, cv = pop.get("F", "CV")
    winners = np.empty(P.shape[0], dtype=int)
    for i, row in enumerate(P):
        best = np.lexsort([np.arange(len(row)), F[row, 0], cv[row, 0]])[0]
        winners[i] = row[best]
    return winners[:, None]


class ElitistSurvival(Survival):
    """Generational replacement that carries the ``n_elites`` best parents over (document 000).

    The next population is the ``n_elites`` best of the current population plus the best
    offspring; if there are too few offspring, the next-best parents fill the gap.
    """

    def __init__(self, n_elites):
        super().__init__(filter_infeasible=False)
        self.n_elites = n_elites

    def _do(self, problem, pop, n_survive=None, algorithm=None, **kwargs):
        n_old = len(algorithm.pop) if algorithm is not None and algorithm.pop is not None else len(pop)
        n_old = min(n_old, len(pop))
        old, off = pop[:n_old], pop[n_old:]
        old = old[_order(old)]
        elites = old[:min(self.n_elites, n_survive)]
        rest = off[_order(off)] if len(off) else off
        chosen = list(elites) + list(rest[:n_survive - len(elites)])
        if len(chosen) < n_survive:
            chosen += list(old[len(elites):len(elites) + n_survive - len(chosen)])
        survivors = Population.create(*chosen)
        order = _order(survivors)
        survivors = survivors[order]
        survivors.set("rank", np.arange(len(survivors)))
        return survivors


@ALGORITHMS.register("ga")
def make_ga(problem, *, pop_size, scoring="weighted", scoring_options=None, n_elites=1, tournament_size=2,
            sampling="random", keep_prob=None, crossover=None, crossover_prob=0.9, mutation_rate=None,
            final_mutation_rate=None, mutation_schedule="exponential", eliminate_duplicates=True):
    """A single-objective GA maximising a score.

    Args:
        problem: A :class:`moprune.PruningProblem` (its scalarized view is searched; the archive
            keeps the problem's objectives followed by ``-score``).
        pop_size: Population size.
        scoring: ``"weighted"``, ``"threshold"``, ``"genecai"`` or a :class:`moprune.scoring.Scoring`.
        scoring_options: Keyword arguments of the score (e.g. ``{"w_acc": 1, "w_macs": 0.5}``).
        n_elites: Best individuals carried over unchanged each generation (document 000 keeps
            one); the other ``pop_size - n_elites`` places go to offspring. ``None``: plus
            selection (parents and offspring compete, best ``pop_size`` survive).
        tournament_size: Individuals per tournament.
        sampling, keep_prob, crossover, crossover_prob, mutation_rate, final_mutation_rate,
            mutation_schedule: See :func:`moprune.operators.default_operators`.
        eliminate_duplicates: Drop offspring whose genome repeats one already in the population.

    Returns:
        A configured ``pymoo.algorithms.soo.nonconvex.ga.GA`` bound to the scalarized problem.
    """
    pop_size = check_pop_size(pop_size, minimum=2)
    scalar = problem.scalarized(scoring, **check_dict("scoring_options", scoring_options))
    n_elites = check_int("n_elites", n_elites, low=0, high=pop_size - 1, allow_none=True)
    if n_elites is None:
        survival, n_offsprings = FitnessSurvival(), pop_size
    else:
        survival, n_offsprings = ElitistSurvival(n_elites), pop_size - n_elites
    tournament_size = check_int("tournament_size", tournament_size, low=1)
    ops = default_operators(problem.space, sampling=sampling, keep_prob=keep_prob, crossover=crossover,
                            crossover_prob=crossover_prob, mutation_rate=mutation_rate,
                            final_mutation_rate=final_mutation_rate, mutation_schedule=mutation_schedule)
    algorithm = GA(pop_size=pop_size, n_offsprings=n_offsprings,
                   selection=TournamentSelection(func_comp=tournament, pressure=tournament_size),
                   survival=survival, eliminate_duplicates=check_bool("eliminate_duplicates", eliminate_duplicates),
                   **ops)
    return bind_problem(algorithm, scalar)
