"""Search algorithms, resolved by name through :data:`ALGORITHMS`.

Contract of a registered factory (every module in this package follows it)::

    @ALGORITHMS.register("nsga2")
    def make_nsga2(problem, *, pop_size, **options) -> pymoo.core.algorithm.Algorithm

``problem`` is a :class:`moprune.PruningProblem` (it exposes ``problem.space`` and
``problem.evaluator``). Unknown ``options`` raise ``TypeError`` naming them. The factory never
seeds anything itself: :func:`moprune.search` passes ``seed`` to ``pymoo.optimize.minimize``,
and every operator draws from the ``random_state`` pymoo hands to ``_do``.

Modules register themselves when imported below.
"""

from moprune.registry import Registry

ALGORITHMS = Registry("algorithm")

# Registered algorithms (import order does not matter; each module registers itself).
from moprune.algorithms import (  # noqa: E402,F401
    focused,
    ga,
    genecai,
    layerwise_ga,
    nsga2,
    random_search,
    sa,
    threshold_ga,
    two_step,
)
