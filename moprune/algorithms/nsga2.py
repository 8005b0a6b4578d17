"""``"nsga2"``: pymoo's NSGA-II with moprune's operators."""

from pymoo.algorithms.moo.nsga2 import NSGA2

from moprune.algorithms import ALGORITHMS
from moprune.operators import default_operators
from moprune.validation import check_bool, check_int, check_pop_size


@ALGORITHMS.register("nsga2")
def make_nsga2(problem, *, pop_size, sampling="random", keep_prob=None, crossover=None, crossover_prob=0.9,
               mutation_rate=None, final_mutation_rate=None, mutation_schedule="exponential",
               n_offsprings=None, eliminate_duplicates=True):
    """NSGA-II on ``problem``'s objectives (error, MACs, ...), with its accuracy constraint if any.

    Args:
        problem: A :class:`moprune.PruningProblem`.
        pop_size: Population size.
        sampling: ``"random"`` or ``"near_original"`` (document 003), or a pymoo ``Sampling``.
        keep_prob: Keep probability of the sampling (see :func:`moprune.operators.default_operators`).
        crossover: ``"uniform"`` (document 000, default for binary spaces), ``"single_point"``
            (document 003), ``"sbx"`` (default for real-valued spaces) or a pymoo ``Crossover``.
        crossover_prob: Probability that a mating is crossed.
        mutation_rate: Initial per-gene mutation probability (binary default ``2 / n_var``).
        final_mutation_rate: Final per-bit flip probability (adaptive rate, document 002).
        mutation_schedule: ``"exponential"``, ``"linear"`` or ``"constant"``.
        n_offsprings: Offspring per generation (default ``pop_size``).
        eliminate_duplicates: Drop offspring whose genome repeats one already in the population.

    Returns:
        A configured ``pymoo.algorithms.moo.nsga2.NSGA2``.
    """
    pop_size = check_pop_size(pop_size, minimum=2)
    n_offsprings = check_int("n_offsprings", n_offsprings, low=1, allow_none=True) or pop_size
    ops = default_operators(problem.space, sampling=sampling, keep_prob=keep_prob, crossover=crossover,
                            crossover_prob=crossover_prob, mutation_rate=mutation_rate,
                            final_mutation_rate=final_mutation_rate, mutation_schedule=mutation_schedule)
    return NSGA2(pop_size=pop_size, n_offsprings=n_offsprings,
                 eliminate_duplicates=check_bool("eliminate_duplicates", eliminate_duplicates), **ops)
