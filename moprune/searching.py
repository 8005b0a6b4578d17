"""``moprune.search``: run any registered algorithm on a :class:`moprune.PruningProblem`.

Example:
    >>> result = moprune.search(problem, "nsga2", pop_size=40, n_evals=500, seed=0)
    >>> len(result.archive)
    500
"""

import contextlib
import inspect
import time
from typing import Any, Callable, Dict, Optional, Sequence, Union

from pymoo.core.algorithm import Algorithm
from pymoo.termination.max_eval import MaximumFunctionCallTermination
from pymoo.termination.max_gen import MaximumGenerationTermination
from tqdm.auto import tqdm

from moprune.algorithms import ALGORITHMS
from moprune.archive import SearchResult
from moprune.exceptions import MopruneError, invalid_value
from moprune.logging import get_logger
from moprune.problem import PruningProblem
from moprune.validation import check_callable, check_int, check_seed, conflict

logger = get_logger("search")

_MAX_STALLS = 100


def algorithm_options(name: str) -> list:
    """The keyword options of registered algorithm ``name`` (its factory's, ``problem`` and ``pop_size`` aside).

    A factory that passes the options it does not name on to other registered algorithms says so
    in its ``passes_options_to`` attribute (``two_step`` to its inner ``nsga2`` or ``ga``); their
    options count too.

    Raises:
        MopruneValueError: an unknown name (the message lists the registered ones).
    """
    factory = ALGORITHMS.get(name)
    params = inspect.signature(factory).parameters
    names = {p for p, v in params.items() if p not in ("problem", "pop_size")
             and v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD)}
    for inner in getattr(factory, "passes_options_to", ()):  # e.g. two_step's **inner_options
        names |= set(algorithm_options(inner))
    return sorted(names)


SearchCallback = Callable[[Algorithm, PruningProblem], Any]
"""The one callback signature of a search: ``callback(algorithm, problem)``.

:func:`search` (``callbacks=[...]``) and :func:`moprune.runs.run_search` call every callback
after each generation that evaluated candidates, once the algorithm has taken them in:
``algorithm`` is the pymoo ``Algorithm`` that runs (its ``pop``, ``n_iter`` and ``termination``
are up to date) and ``problem`` the :class:`moprune.PruningProblem` searched, whose ``archive``
then holds that generation and whose ``generation`` is its index (0-based). ``run_search``
calls them after the generation's checkpoint is written. Callbacks are not stored on the
algorithm, so a checkpoint of it stays small and picklable; an exception raised in one stops
the search (``run_search`` keeps its last checkpoint).
"""


def search(problem: PruningProblem, algorithm: Union[str, Algorithm] = "focused", *, pop_size: int = 20,
           n_gen: Optional[int] = None, n_evals: Optional[int] = None, seed: int = 0,
           callbacks: Sequence[SearchCallback] = (), progress: bool = False,
           resume: Optional[Dict[str, Any]] = None, **options: Any) -> SearchResult:
    """Search ``problem`` with a registered algorithm and return every candidate it asked for.

    The algorithm is built by its registry factory (``make_xxx(problem, pop_size=..., **options)``).
    If the factory bound another problem to it (see :func:`moprune.problem.bind_problem`, e.g.
    the scalarized view used by ``"ga"``), that problem is searched; the archive is the same.

    Budget: exactly one of ``n_gen`` (generations, the initial population being generation 0)
    and ``n_evals`` (candidates requested, cache hits included; the last generation is cut
    short so that the archive holds exactly ``n_evals`` entries).

    Each run starts a fresh archive on ``problem``; the evaluator's cache is kept, so a second
    run on the same problem is served from it (its entries say ``cached=True``).

    Args:
        problem: A :class:`moprune.PruningProblem`.
        algorithm: A registered name (see ``moprune.algorithms.ALGORITHMS.names()``) or a
            configured pymoo ``Algorithm`` that has not run yet (then ``options`` must be empty;
            it is run in place, so its final state can be inspected afterwards).
        pop_size: Population size passed to the factory.
        n_gen: Number of generations.
        n_evals: Number of candidates.
        seed: Seed of the run, handed to pymoo (all operators draw from its generator).
        callbacks: Callables ``callback(algorithm, problem)`` called in order after every
            generation (see :data:`SearchCallback`).
        progress: Show a progress bar of the candidates (it turns itself off when stderr is not
            a terminal).
        resume: ``None``, or ``{"algorithm": a pymoo Algorithm set up on this problem and
            advanced some generations (e.g. unpickled from a checkpoint), "archive": the
            problem's archive at that moment}``: the run continues from there (no new setup;
            ``algorithm`` must then be the registry name the run started with, for the result's
            name, and ``options`` are not used).
        **options: Options of the algorithm's factory (unknown ones raise ``TypeError``).

    Returns:
        A :class:`moprune.SearchResult`.

    Raises:
        MopruneValueError: A bad budget, population size, seed or algorithm name.
        TypeError: Unknown options.
    """
    if not isinstance(problem, PruningProblem):
        raise invalid_value("problem", "a moprune.PruningProblem", type(problem).__name__)
    if (n_gen is None) == (n_evals is None):
        raise conflict(("n_gen", "n_evals"), "exactly one of them set", (n_gen, n_evals))
    if n_gen is not None:
        n_gen = check_int("n_gen", n_gen, low=1)
        termination = MaximumGenerationTermination(n_gen)
    else:
        n_evals = check_int("n_evals", n_evals, low=1)
        termination = MaximumFunctionCallTermination(n_evals)
    seed = check_seed(seed)
    if callable(callbacks) or isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, (list, tuple)):
        raise invalid_value("callbacks", "a list of callables callback(algorithm, problem)", callbacks)
    callbacks = [check_callable(f"callbacks[{i}]", c, "(algorithm, problem)", allow_none=False)
                 for i, c in enumerate(callbacks)]
    if resume is not None:
        if (not isinstance(resume, dict) or set(resume) != {"algorithm", "archive"}
                or not isinstance(resume["algorithm"], Algorithm) or resume["algorithm"].problem is None):
            raise invalid_value("resume", 'None or {"algorithm": a set-up pymoo Algorithm, "archive": list}',
                                type(resume).__name__)
        if not isinstance(algorithm, str):
            raise invalid_value("algorithm", "the registry name of the resumed run", algorithm)
        name, algo = algorithm, resume["algorithm"]
    elif isinstance(algorithm, Algorithm):
        if options:
            raise conflict(("options",), "empty with a pymoo Algorithm instance (it is configured already)",
                           sorted(options))
        # run in place (its state stays inspectable after the run); a used instance is refused
        if algorithm.problem is not None:
            raise invalid_value("algorithm", "a pymoo Algorithm that has not been run yet (build a new one)",
                                type(algorithm).__name__)
        name, algo = type(algorithm).__name__, algorithm
    elif isinstance(algorithm, str):
        name = algorithm
        factory = ALGORITHMS.get(name)
        unknown = sorted(set(options) - set(algorithm_options(name)))
        if unknown:
            raise TypeError(f"algorithm {name!r} has no option(s) {unknown}; its options are: "
                            f"{', '.join(algorithm_options(name))}")
        algo = factory(problem, pop_size=pop_size, **options)  # pop_size: checked by the algorithm
    else:
        raise invalid_value("algorithm", f"one of {ALGORITHMS.names()} or a pymoo Algorithm", algorithm)

    run_problem = getattr(algo, "moprune_problem", None)
    if run_problem is None:
        run_problem = problem
    root = getattr(run_problem, "parent", run_problem)
    if resume is not None and root is not problem:
        raise invalid_value("resume", "an algorithm set up on this problem", type(root).__name__)
    root.reset()
    base_accuracy = root.base_accuracy  # measured before the run, outside the counters' story
    counters_before = dict(root.evaluator.counters()) if hasattr(root.evaluator, "counters") else None

    if resume is None:
        algo.setup(run_problem, termination=termination, seed=seed, verbose=False)
    else:
        root.archive = list(resume["archive"])

    start = time.perf_counter()
    bar = tqdm(total=n_evals, desc=name, unit="candidate", disable=None if progress else True, leave=False,
               initial=len(root.archive))
    # worker processes (Evaluator(workers=N)) start at the first generation and stop when the run ends
    session = getattr(root.evaluator, "session", None)
    try:
        with session() if session is not None else contextlib.nullcontext():
            _run(algo, run_problem, root, n_evals, name, bar, callbacks)
    finally:
        bar.close()
    result = algo.result()
    result.algorithm = algo  # as pymoo's minimize does

    if counters_before is not None:
        after = root.evaluator.counters()
        logger.info("%s: %d candidates in %.1f s (%d run, %d of them stopped early as dominated, %d confirmed "
                    "on more images, %d from the cache, %d failed)", name, len(root.archive),
                    time.perf_counter() - start, after["n_evaluated"] - counters_before["n_evaluated"],
                    sum(e.screened and not e.cached for e in root.archive),
                    sum(e.confirmed and not e.cached for e in root.archive),
                    after["n_cached"] - counters_before["n_cached"],
                    after["n_failed"] - counters_before["n_failed"])
    return SearchResult.from_problem(run_problem, algorithm=name, seed=seed, base_accuracy=base_accuracy,
                                     pymoo_result=result)


def _run(algo, run_problem, root, n_evals, name, bar, callbacks):
    """The ask-evaluate-tell loop; the last generation is cut to fit an ``n_evals`` budget."""
    stalls = 0
    while algo.has_next():
        infills = algo.infill()
        if infills is None:
            algo.advance()
            continue
        run_problem.generation = int(algo.n_iter) - 1
        before = len(root.archive)
        if n_evals is not None:
            remaining = n_evals - before
            if remaining <= 0:
                break
            if len(infills) > remaining:
                infills = infills[:remaining]
        algo.evaluator.eval(run_problem, infills, algorithm=algo)
        algo.advance(infills=infills)
        logger.debug("%s: generation %d done, %d candidates so far", name, run_problem.generation,
                     len(root.archive))
        bar.update(len(root.archive) - before)
        for callback in callbacks:
            callback(algo, root)
        stalls = stalls + 1 if len(root.archive) == before else 0
        if stalls >= _MAX_STALLS:
            raise MopruneError(f"algorithm {name!r} asked for no new candidate in {_MAX_STALLS} generations")
