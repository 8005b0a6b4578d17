"""NSGA-II vs weighted-sum GA vs random search on mnist_cnn's channels, by hypervolume.

Every candidate each run evaluated counts (the weighted GA's rejected ones too), so the curves
compare what each algorithm learned about the accuracy/MACs trade-off per evaluation spent.

Run from the repository root (trains and caches the mnist_cnn baseline first if needed):

    .venv/bin/python studies/nsga2_vs_weighted_ga/run.py

It writes ``compare.csv``, ``final.csv``, ``convergence.png`` and ``pareto_seed0.png`` next to
this file and prints the final table.
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")

import moprune  # noqa: E402
from moprune.plotting import plot_convergence, plot_pareto  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ALGORITHMS = {
    "nsga2": {},
    "ga-weighted": {"algorithm": "ga", "scoring": "weighted", "scoring_options": {"w_acc": 1.0, "w_macs": 1.0}},
    "random": {"algorithm": "random"},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evals", type=int, default=300)
    parser.add_argument("--pop-size", type=int, default=20)
    parser.add_argument("--val-samples", type=int, default=1000)
    args = parser.parse_args()

    splits = moprune.load_mnist()
    model = moprune.pretrained("mnist_cnn", data=splits, progress=False)
    space = moprune.ChannelSpace(model, encoding="binary")
    evaluator = moprune.Evaluator(splits.val, n_samples=args.val_samples, batch_size=250)
    runs = {name: [] for name in ALGORITHMS}
    for name, spec in ALGORITHMS.items():
        options = dict(spec)
        algorithm = options.pop("algorithm", name)
        for seed in range(args.seeds):
            problem = moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))
            start = time.perf_counter()
            result = moprune.search(problem, algorithm, pop_size=args.pop_size, n_evals=args.evals, seed=seed,
                                    **options)
            front = moprune.pareto_front(result, objectives=("error", "macs"))
            print(f"{name} seed {seed}: {len(result.archive)} candidates in {time.perf_counter() - start:.1f} s, "
                  f"front of {len(front)}, hypervolume {moprune.hypervolume(front, objectives=('error', 'macs')):.4f}",
                  flush=True)
            runs[name].append(result)

    table = moprune.compare(runs, objectives=("error", "macs"), n_points=10)
    table.to_csv(os.path.join(HERE, "compare.csv"), index=False)
    final = table[table["n_evals"] == table["n_evals"].max()]
    final.to_csv(os.path.join(HERE, "final.csv"), index=False)
    print(final.to_string(index=False))

    ax = plot_convergence(table)
    ax.figure.savefig(os.path.join(HERE, "convergence.png"), dpi=120, bbox_inches="tight")
    best = moprune.pareto_front(runs["nsga2"][0], objectives=("error", "macs"))
    ax = plot_pareto(runs["nsga2"][0], pick=moprune.pick(best, method="knee"))
    ax.figure.savefig(os.path.join(HERE, "pareto_seed0.png"), dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
