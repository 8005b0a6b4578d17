"""Overhead of the search machinery: search() wall time vs bare forward passes of the same models.

``mnist_cnn`` (random weights: no training needed), binary channel space, a fixed subset of the
MNIST validation split, ``--evals`` candidates through :func:`moprune.search`. Then every
distinct pruned model the search evaluated is rebuilt and timed doing nothing but forward passes
over the same images at the same batch size. The ratio search / bare is what pymoo, decoding,
materializing, the archive and the cache add (target: at most 1.10).

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_search.py --evals 500 --samples 2000 \
        --out benchmarks/results/bench_search.txt

The CPU is shared on the machines this was written on and its load drifts over minutes, so by
default the bare forward passes of each generation's new models are timed in a callback right
after that generation, and the callback's time is subtracted from the search's wall time: both
numbers come from the same minutes. ``--sequential`` times them all after the search instead.
"""

import argparse
import os
import platform
import time

import numpy as np
import torch

import moprune
from moprune.evaluation import Evaluator
from moprune.problem import PruningProblem
from moprune.searching import search
from moprune.space import ChannelSpace


def bare_forward_seconds(models, images, batch_size):
    """Seconds spent in forward passes only (no argmax, no accuracy), summed over ``models``."""
    total = 0.0
    with torch.inference_mode():
        for model in models:
            start = time.perf_counter()
            for i in range(0, len(images), batch_size):
                model(images[i:i + batch_size])
            total += time.perf_counter() - start
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=500)
    parser.add_argument("--pop-size", type=int, default=50)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--algorithm", default="nsga2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--sequential", action="store_true",
                        help="time all bare forwards after the search instead of after each generation")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = moprune.get_model("mnist_cnn").eval()
    val = moprune.load_mnist().val

    search_s, bare_unique_s, bare_all_s = 0.0, 0.0, 0.0
    lines = []
    for r in range(args.rounds):
        space = ChannelSpace(model)
        evaluator = Evaluator(val, n_samples=args.samples, batch_size=args.batch_size, seed=0)
        problem = PruningProblem(space, evaluator, objectives=("error", "macs"))
        problem.base_accuracy  # measured once, outside both timings
        images = evaluator.val_subset.tensors[0]
        seen = set()
        state = {"bare": 0.0, "callback": 0.0, "done": 0, "n_models": 0}

        def time_new_models(algorithm, _problem):
            """After each generation: rebuild this generation's new plans and time bare forwards.

            The time spent here is subtracted from the search's wall time, so both numbers are
            measured in the same minutes of a (possibly shared) CPU.
            """
            start = time.perf_counter()
            new = []
            for e in problem.archive[state["done"]:]:
                if e.plan_key not in seen:
                    seen.add(e.plan_key)
                    new.append(space.materialize(e.genome))
            state["done"] = len(problem.archive)
            state["bare"] += bare_forward_seconds(new, images, args.batch_size)
            state["n_models"] += len(new)
            state["callback"] += time.perf_counter() - start

        start = time.perf_counter()
        result = search(problem, args.algorithm, pop_size=args.pop_size, n_evals=args.evals, seed=args.seed,
                        callbacks=[] if args.sequential else [time_new_models])
        wall = time.perf_counter() - start
        if args.sequential:
            time_new_models(None)
            t_search = wall
        else:
            if state["done"] < len(problem.archive):  # a generation cut short by the budget
                t0 = time.perf_counter()
                time_new_models(None)
                wall += time.perf_counter() - t0
            t_search = wall - state["callback"]
        t_unique, n_models = state["bare"], state["n_models"]
        t_all = t_unique / n_models * len(result.archive) if n_models else 0.0
        search_s += t_search
        bare_unique_s += t_unique
        bare_all_s += t_all
        run_s = sum(e.seconds for e in result.archive)
        lines.append(f"round {r}: search {t_search:.2f} s (evaluator's own per-candidate time {run_s:.2f} s) | "
                     f"bare forward of the {n_models} distinct models {t_unique:.2f} s "
                     f"({t_unique / max(n_models, 1) * 1000:.1f} ms each) | evaluated {evaluator.n_evaluated}, "
                     f"cached {evaluator.n_cached}, archive {result.n_evals}, "
                     f"mean MACs ratio {np.mean([e.macs_ratio for e in result.archive]):.3f}")

    ratio = search_s / bare_unique_s
    report = [
        "bench_search: search() wall time vs bare forward passes of the same pruned models",
        f"command: .venv/bin/python benchmarks/bench_search.py --evals {args.evals} --pop-size {args.pop_size} "
        f"--samples {args.samples} --batch-size {args.batch_size} --algorithm {args.algorithm} --seed {args.seed} "
        f"--rounds {args.rounds}" + (f" --threads {args.threads}" if args.threads else "")
        + (" --sequential" if args.sequential else ""),
        "bare forwards timed " + ("after the search" if args.sequential else
                                  "after each generation (callback time subtracted from the search time)"),
        f"model mnist_cnn (random weights), binary ChannelSpace, {args.samples} MNIST validation images, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.2f}",
        *lines,
        f"search total            : {search_s:.2f} s",
        f"bare forward (distinct) : {bare_unique_s:.2f} s",
        f"bare forward (all {args.evals} requested, cached ones counted again): {bare_all_s:.2f} s",
        f"ratio search / bare (distinct models): {ratio:.3f}  (target <= 1.10: {'PASS' if ratio <= 1.10 else 'FAIL'})",
        f"ratio search / bare (all requested)  : {search_s / bare_all_s:.3f}",
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return ratio


if __name__ == "__main__":
    main()
