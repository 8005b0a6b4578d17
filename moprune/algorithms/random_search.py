"""``"random"``: random search at the same budget, the baseline every comparison needs."""

from pymoo.core.algorithm import Algorithm
from pymoo.core.population import Population
from pymoo.util.optimum import filter_optimum

from moprune.algorithms import ALGORITHMS
from moprune.operators import default_operators
from moprune.problem import bind_problem
from moprune.validation import check_pop_size, conflict


class RandomSearch(Algorithm):
    """Draw ``pop_size`` fresh random genomes per generation; keep the best (non-dominated) ones.

    Args:
        pop_size: Genomes per generation.
        sampling: A pymoo ``Sampling``.
        repair: A pymoo ``Repair`` (the space's).
        **kwargs: Passed to ``pymoo.core.algorithm.Algorithm``.
    """

    def __init__(self, *, pop_size, sampling, repair, **kwargs):
        super().__init__(**kwargs)
        self.pop_size = pop_size
        self.sampling = sampling
        self.repair = repair

    def _sample(self):
        pop = self.sampling.do(self.problem, self.pop_size, random_state=self.random_state)
        return self.repair.do(self.problem, pop, random_state=self.random_state)

    def _initialize_infill(self):
        return self._sample()

    def _infill(self):
        return self._sample()

    def _best(self, pop):
        best = filter_optimum(pop, least_infeasible=True)
        if best is None:
            return Population.empty()
        return best if isinstance(best, Population) else Population.create(best)

    def _initialize_advance(self, infills=None, **kwargs):
        self.pop = self._best(infills)

    def _advance(self, infills=None, **kwargs):
        self.pop = self._best(Population.merge(self.pop, infills))


@ALGORITHMS.register("random")
def make_random(problem, *, pop_size, sampling="random", keep_prob=None, scoring=None, scoring_options=None):
    """Random search: ``pop_size`` independent random genomes per generation.

    Args:
        problem: A :class:`moprune.PruningProblem`.
        pop_size: Genomes per generation (with ``n_evals`` only the total matters).
        sampling: ``"random"`` (default; each genome's keep rate drawn uniformly, so all model
            sizes are covered), ``"near_original"`` or a pymoo ``Sampling``.
        keep_prob: Keep probability of the sampling.
        scoring: Optional score name or :class:`moprune.scoring.Scoring`: search its scalarized
            view (to compare with ``"ga"`` at the same budget); ``None`` keeps the problem's objectives.
        scoring_options: Keyword arguments of the score.

    Returns:
        A :class:`RandomSearch`.
    """
    pop_size = check_pop_size(pop_size)
    if scoring is None and scoring_options is not None:
        raise conflict(("scoring", "scoring_options"), "scoring set when scoring_options are given",
                       (scoring, scoring_options))
    ops = default_operators(problem.space, sampling=sampling, keep_prob=keep_prob)
    algorithm = RandomSearch(pop_size=pop_size, sampling=ops["sampling"], repair=ops["repair"])
    if scoring is not None:
        bind_problem(algorithm, problem.scalarized(scoring, **(scoring_options or {})))
    return algorithm
