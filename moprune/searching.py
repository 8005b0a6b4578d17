"""``moprune.search``: run any registered algorithm on a :class:`moprune.PruningProblem`.

Example:
    >>> result = moprune.search(problem, "nsga2", pop_size=40, n_evals=500, seed=0)
    >>> len(result.archive)
    500
"""

import time

from pymoo.core.algorithm import Algorithm
from pymoo.termination.max_eval import MaximumFunctionCallTermination
from pymoo.termination.max_gen import MaximumGenerationTermination
from tqdm.auto import tqdm

from moprune.algorithms import ALGORITHMS
from moprune.archive import SearchResult
from moprune.exceptions import MopruneError, invalid_value
from moprune.logging import get_logger
from moprune.problem import PruningProblem
from moprune.validation import check_callable, check_int, check_pop_size, check_seed, conflict

logger = get_logger("search")

_MAX_STALLS = 100


def search(problem, algorithm="focused", *, pop_size=40, n_gen=None, n_evals=None, seed=0, callback=None,
           progress=False, on_generation=None, resume=None, **options):
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
        callback: Optional ``callable(algorithm)`` called after every generation.
        progress: Show a progress bar of the candidates (it turns itself off when stderr is not
            a terminal).
        on_generation: Optional ``callable(algorithm, problem)`` called after every generation
            that evaluated candidates, once the algorithm has taken them in (``problem`` is the
            root :class:`moprune.PruningProblem`, whose archive then holds that generation).
            :mod:`moprune.runs` writes its checkpoints here. Unlike ``callback`` it is not
            stored on the algorithm, so the algorithm stays picklable.
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
    pop_size = check_pop_size(pop_size)
    seed = check_seed(seed)
    check_callable("callback", callback, "(algorithm)")
    check_callable("on_generation", on_generation, "(algorithm, problem)")
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
        algo = ALGORITHMS.get(name)(problem, pop_size=pop_size, **options)
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
        setup = {"termination": termination, "seed": seed, "verbose": False}
        if callback is not None:
            setup["callback"] = callback
        algo.setup(run_problem, **setup)
    else:
        root.archive = list(resume["archive"])

    start = time.perf_counter()
    bar = tqdm(total=n_evals, desc=name, unit="candidate", disable=None if progress else True, leave=False,
               initial=len(root.archive))
    try:
        _run(algo, run_problem, root, n_evals, name, bar, on_generation)
    finally:
        bar.close()
    result = algo.result()
    result.algorithm = algo  # as pymoo's minimize does

    if counters_before is not None:
        after = root.evaluator.counters()
        logger.info("%s: %d candidates in %.1f s (%d run, %d from the cache, %d failed)", name,
                    len(root.archive), time.perf_counter() - start,
                    after["n_evaluated"] - counters_before["n_evaluated"],
                    after["n_cached"] - counters_before["n_cached"],
                    after["n_failed"] - counters_before["n_failed"])
    return SearchResult.from_problem(run_problem, algorithm=name, seed=seed, base_accuracy=base_accuracy,
                                     pymoo_result=result)


def _run(algo, run_problem, root, n_evals, name, bar, on_generation=None):
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
        if on_generation is not None:
            on_generation(algo, root)
        stalls = stalls + 1 if len(root.archive) == before else 0
        if stalls >= _MAX_STALLS:
            raise MopruneError(f"algorithm {name!r} asked for no new candidate in {_MAX_STALLS} generations")
