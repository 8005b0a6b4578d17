"""Channel pruning vs low-rank decomposition vs both ("D + Ps", document 004) on lenet5_caffe and vgg_small.

For each model, three spaces are searched with the same algorithm (pymoo NSGA-II, the project's
``"nsga2"``: integer operators for the rank spaces, SBX/PM for the channel ratios), the same
budget and the same evaluator settings:

- ``channels``: :class:`moprune.ChannelSpace`, ratio encoding (one keep ratio per group, L1 ranking);
- ``decomposition``: :class:`moprune.LowRankSpace` (SVD of Linear layers, Tucker-2 of convolutions);
- ``channels+decomposition``: :class:`moprune.LowRankChannelSpace` (channels first, then ranks).

Then a few points of each front (within ``--max-drop`` points of the base at search time, spread
on log-MACs) are retrained briefly with :func:`moprune.retrain_front` and measured on the full
validation and test splits. Small on purpose (it must run in well under 45 minutes on a shared
2-core CPU): see ``SETTINGS`` for the population, evaluations and retraining of each model.

Run from the repository root (trains and caches the baselines first if needed)::

    OMP_NUM_THREADS=1 .venv/bin/python studies/lowrank/run.py

It writes, next to this file, ``<model>_fronts.csv`` (search-time fronts),
``<model>_retrained.csv`` (retrained points), ``<model>.png`` (both, one plot per model) and
``<model>_summary.csv`` (sizes, times, smallest MACs within 1 test point), and prints the tables.
``--models`` runs a subset (one model per command keeps the other's files).
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

import moprune  # noqa: E402
from moprune.data import Splits  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

SETTINGS = {
    # baseline recipe override, search budget, evaluator and retraining of each model
    "lenet5_caffe": dict(recipe={}, pop_size=20, n_evals=200, val_samples=1000, retrain_images=None,
                         retrain_val_images=None),
    "vgg_small": dict(recipe={"epochs": 3}, pop_size=12, n_evals=60, val_samples=500, retrain_images=5000,
                      retrain_val_images=1000),
}
SPACES = {
    "channels": lambda model: moprune.ChannelSpace(model, encoding="ratio"),
    "decomposition": lambda model: moprune.LowRankSpace(model),
    "channels+decomposition": lambda model: moprune.LowRankChannelSpace(model),
}
COLORS = {"channels": "tab:blue", "decomposition": "tab:orange", "channels+decomposition": "tab:green"}


def subset(data, n, seed=0):
    """The first ``n`` images of a seeded permutation of ``data`` (all when ``n`` is None)."""
    if n is None or n >= len(data):
        return data
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return TensorDataset(*(t[index] for t in data.tensors))


def run_model(name, args, splits):
    cfg = SETTINGS[name]
    start = time.perf_counter()
    base = moprune.pretrained(name, data=splits, progress=False, **cfg["recipe"])
    print(f"\n== {name}: baseline ready in {time.perf_counter() - start:.0f} s (recipe override {cfg['recipe']})",
          flush=True)
    retrain_data = Splits(subset(splits.train, cfg["retrain_images"]), subset(splits.val, cfg["retrain_val_images"]),
                          splits.test)  # the test split is always whole
    fronts, retrained, rows = [], [], []
    for label, make_space in SPACES.items():
        t0 = time.perf_counter()
        space = make_space(base)
        evaluator = moprune.Evaluator(splits.val, n_samples=cfg["val_samples"], batch_size=250,
                                      train_data=splits.train, n_train_samples=2000, bn_batches=4,
                                      bn_batch_size=100, num_threads=1, finetune=None)
        problem = moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))
        result = moprune.search(problem, "nsga2", pop_size=cfg["pop_size"], n_evals=cfg["n_evals"], seed=args.seed)
        t_search = time.perf_counter() - t0
        front = moprune.pareto_front(result)
        front = front.assign(model=name, space=label)
        fronts.append(front[["model", "space", "accuracy", "accuracy_drop", "macs_ratio", "params_ratio"]])
        t1 = time.perf_counter()
        table = moprune.retrain_front(result, data=retrain_data, base_model=base, n_points=args.retrain_points,
                                      epochs=1, lr=0.01, max_drop=args.max_drop, seed=args.seed)
        t_retrain = time.perf_counter() - t1
        table = table.assign(model=name, space=label)
        retrained.append(table[["model", "space", "search_accuracy", "accuracy", "test_accuracy", "test_drop",
                                "macs_ratio", "params_ratio"]])
        best = table[table["test_drop"] <= 1.0]
        rows.append(dict(model=name, space=label, n_var=space.n_var, n_evals=len(result.archive),
                         front_size=len(front), search_s=round(t_search, 1), retrain_s=round(t_retrain, 1),
                         base_test_accuracy=table.attrs.get("base_test_accuracy"),
                         smallest_macs_within_1pt_test=(best["macs_ratio"].min() if len(best) else np.nan)))
        print(f"{label}: {space.n_var} genes, {len(result.archive)} evaluations in {t_search:.0f} s, front of "
              f"{len(front)}; retrained {len(table)} points in {t_retrain:.0f} s", flush=True)
        print(table[["search_accuracy", "accuracy", "test_accuracy", "test_drop", "macs_ratio",
                     "params_ratio"]].to_string(), flush=True)
    fronts = pd.concat(fronts, ignore_index=True)
    retrained = pd.concat(retrained)
    fronts.to_csv(os.path.join(HERE, f"{name}_fronts.csv"), index=False)
    retrained.to_csv(os.path.join(HERE, f"{name}_retrained.csv"), index_label="eval")
    plot(name, fronts, retrained, rows[0]["base_test_accuracy"])
    pd.DataFrame(rows).to_csv(os.path.join(HERE, f"{name}_summary.csv"), index=False)
    print(f"{name}: {time.perf_counter() - start:.0f} s in all", flush=True)
    return rows


def plot(name, fronts, retrained, base):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, color in COLORS.items():
        f = fronts[fronts["space"] == label].sort_values("macs_ratio")
        ax.step(f["macs_ratio"], 100 * f["accuracy"], where="post", color=color, alpha=0.45, linestyle="--",
                label=f"{label}: search front (val subset, no retraining)")
        r = retrained[retrained["space"] == label].sort_values("macs_ratio")
        ax.plot(r["macs_ratio"], 100 * r["test_accuracy"], "o-", color=color, label=f"{label}: retrained (test)")
    if base is not None and np.isfinite(base):
        ax.axhline(100 * base, color="grey", linewidth=0.8, label="base (test)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("MACs (fraction of the base model)")
    ax.set_ylabel("accuracy (%)")
    low = min(100 * retrained["test_accuracy"].min(), 100 * fronts["accuracy"].max() - 10)
    ax.set_ylim(max(low - 1, 0), 100)
    ax.set_title(f"{name}: channel pruning vs decomposition vs both")
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(os.path.join(HERE, f"{name}.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain-points", type=int, default=3)
    parser.add_argument("--max-drop", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    splits = moprune.load_mnist()
    rows = []
    for name in args.models:
        rows += run_model(name, args, splits)
    print("\n" + pd.DataFrame(rows).to_string(index=False))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
