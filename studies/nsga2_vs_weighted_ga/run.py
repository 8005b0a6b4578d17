"""NSGA-II vs weighted-sum GA vs simulated annealing vs random search on mnist_cnn's channels.

Every candidate a run evaluated counts (the weighted GA's and SA's rejected ones too), so the
curves compare what each algorithm learned about the accuracy/MACs trade-off per evaluation
spent. One weight setting of the weighted-sum GA converges on one trade-off, so it is run as a
sweep: ``len(WEIGHT_SWEEP)`` settings sharing the budget, their archives counted together.
Methods: the default ``focused`` search, ``nsga2``, the weighted-GA sweep, ``sa`` (its default
accuracy + sparsity score, all layers) and ``random``.

For seed 0, each method's front (error, MACs) is then retrained the same way (4 points within
5 search-time points of the base and at most 30% of the MACs, 1 epoch at lr 0.01) and measured
on the validation and test splits: the models a user ends with.

Run from the repository root (trains and caches the mnist_cnn baseline first if needed):

    .venv/bin/python studies/nsga2_vs_weighted_ga/run.py

It writes ``compare.csv``, ``final.csv``, ``retrained.csv``, ``convergence.png``,
``retrained.png`` and ``record.json`` next to this file and prints the tables.
"""

import argparse
import dataclasses
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import save_figure, write_csv, write_record  # noqa: E402

import moprune  # noqa: E402
from moprune.plotting import plot_convergence  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHT_SWEEP = (0.1, 0.3, 1.0, 3.0)
"""``w_macs`` of the weighted-sum GA runs (``w_acc = 1``): from accuracy-heavy to MACs-heavy."""
OBJECTIVES = ("error", "macs")


def two_objectives(result):
    """``result`` with every candidate's objectives cut to (error, MACs) (drops a scalar score)."""
    keep = len(OBJECTIVES)
    archive = [dataclasses.replace(e, objectives=tuple(e.objectives[:keep])) for e in result.archive]
    return dataclasses.replace(result, archive=archive, objectives=OBJECTIVES)


def merged(results):
    """One result holding the archives of ``results`` one after the other (a weight sweep)."""
    parts = [two_objectives(r) for r in results]
    archive = [e for part in parts for e in part.archive]
    return dataclasses.replace(parts[0], archive=archive, algorithm="ga-weighted-sweep")


def hv_region(result, base_accuracy, points=10.0):
    """Hypervolume of the front within ``points`` of the base error (reference: that error, 1), normalised."""
    F = np.array([[1.0 - e.accuracy if np.isfinite(e.accuracy) else 1.0, e.macs_ratio] for e in result.archive])
    ref = np.array([1.0 - base_accuracy + points / 100.0, 1.0])
    inside = F[(F < ref).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=ref)(inside) / np.prod(ref))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evals", type=int, default=300)
    parser.add_argument("--pop-size", type=int, default=20)
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--points", type=int, default=4, help="front points retrained per method (seed 0)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = moprune.load_mnist()
    model = moprune.pretrained("mnist_cnn", data=splits, progress=False)
    space = moprune.ChannelSpace(model, encoding="binary")

    def problem():
        evaluator = moprune.Evaluator(splits.val, n_samples=args.val_samples, batch_size=250,
                                      num_threads=args.threads)
        return moprune.PruningProblem(space, evaluator, objectives=OBJECTIVES)

    share = args.evals // len(WEIGHT_SWEEP)
    methods = {
        "focused (default)": lambda seed: moprune.search(problem(), pop_size=args.pop_size, n_evals=args.evals,
                                                         seed=seed),
        "nsga2": lambda seed: moprune.search(problem(), "nsga2", pop_size=args.pop_size, n_evals=args.evals,
                                             seed=seed),
        "ga-weighted sweep": lambda seed: merged([
            moprune.search(problem(), "ga", scoring="weighted", scoring_options={"w_acc": 1.0, "w_macs": w},
                           pop_size=args.pop_size, n_evals=share, seed=seed) for w in WEIGHT_SWEEP]),
        "sa": lambda seed: two_objectives(moprune.search(problem(), "sa", pop_size=4, n_evals=args.evals,
                                                         seed=seed)),
        "random": lambda seed: moprune.search(problem(), "random", pop_size=args.pop_size, n_evals=args.evals,
                                              seed=seed),
    }
    runs, rows = {name: [] for name in methods}, []
    for name, run in methods.items():
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            result = run(seed)
            seconds = time.perf_counter() - t0
            runs[name].append(result)
            front = moprune.pareto_front(result, objectives=OBJECTIVES)
            within = front[front["accuracy_drop"] <= 1.0]
            rows.append({"method": name, "seed": seed, "evaluations": len(result.archive), "seconds": round(seconds),
                         "hv_box": moprune.hypervolume(front, objectives=OBJECTIVES),
                         "hv_region": hv_region(result, result.base_accuracy),
                         "smallest_macs_within_1_point": within["macs_ratio"].min() if len(within) else np.nan})
            print(rows[-1], flush=True)
    per_seed = pd.DataFrame(rows)
    final = per_seed.groupby("method", sort=False).agg(
        seeds=("seed", "count"), evaluations=("evaluations", "mean"), hv_box=("hv_box", "mean"),
        hv_box_std=("hv_box", "std"), hv_region=("hv_region", "mean"), hv_region_std=("hv_region", "std"),
        smallest_macs_within_1_point=("smallest_macs_within_1_point", "mean"), seconds=("seconds", "mean"))
    table = moprune.compare(runs, objectives=OBJECTIVES, n_points=10)
    write_csv(table, os.path.join(HERE, "compare.csv"), index=False)
    write_csv(per_seed, os.path.join(HERE, "per_seed.csv"), index=False)
    write_csv(final.reset_index(), os.path.join(HERE, "final.csv"), index=False)
    ax = plot_convergence(table)
    save_figure(ax.figure, os.path.join(HERE, "convergence.png"))
    plt.close(ax.figure)

    retrained = []
    for name, results in runs.items():
        t0 = time.perf_counter()
        frame = moprune.retrain_front(results[0], data=splits, base_model=model, n_points=args.points, epochs=1, lr=0.01,
                                      max_drop=5.0, max_macs=0.3, seed=0)
        retrained.append(frame.drop(columns=["genome", "path"]).reset_index().assign(method=name))
        print(f"{name}: retrained {len(frame)} front points in {time.perf_counter() - t0:.0f} s", flush=True)
    retrained = pd.concat(retrained, ignore_index=True)
    write_csv(retrained, os.path.join(HERE, "retrained.csv"), index=False)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, group in retrained.groupby("method", sort=False):
        group = group.sort_values("macs_ratio")
        ax.plot(100 * group["macs_ratio"], 100 * group["test_accuracy"], "o-", label=name)
    ax.axhline(100 * frame.attrs["base_test_accuracy"], color="green", linestyle=":", label="base")
    ax.set_xscale("log")
    ax.set_xlabel("MACs, % of the base (log)")
    ax.set_ylabel("test accuracy after 1 epoch of retraining, %")
    ax.set_title("mnist_cnn channels, seed 0: each method's front retrained the same way")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(HERE, "retrained.png"))
    plt.close(fig)

    record = write_record(HERE, wall_s=time.perf_counter() - start)
    pd.set_option("display.width", 200)
    print(final.round(4).to_string())
    print(retrained[["method", "macs_ratio", "search_accuracy", "accuracy", "test_accuracy"]].round(4).to_string())
    print(f"wall time {record['wall_s']:.0f} s; {record['command']}")


if __name__ == "__main__":
    main()
