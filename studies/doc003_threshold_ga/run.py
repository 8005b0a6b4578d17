"""Document 003 reproduced: the threshold GA (Algorithm 1 fitness) on vgg_small's conv filters, no retraining.

Document 003 assigns one bit per convolutional filter and runs a GA (its Algorithm 2) whose
fitness (Algorithm 1) is the percentage of parameters dropped while the accuracy drop stays
under a threshold (2 points), and ``drop_params / (drop_acc + eps) - lam * drop_acc`` outside
it. Settings (its table 3.1): initial population I = 50 individuals close to the original model,
the K = 10 fittest mate (single-point crossover, two recombinations and two copies per pair),
per-gene mutation probability P = 0.0002, the T = 300 fittest survive, threshold 2 points; the
number of generations M is not given. It prunes VGG16 on CIFAR-10 (test 86.87% -> 85.24%, 38.82%
of the parameters and 19.52% of the FLOPs removed) and VGG19 on SVHN (92.43% -> 91.42%, 21.01% /
12.32%), scoring candidates on the whole training set, without retraining.

Here: ``vgg_small`` on MNIST, one bit per output channel of its five conv layers (the
classifier is not pruned, as in the document), ``threshold_ga`` with the document's I, K, P, T,
threshold 2, ``epsilon = 10`` (the document's value) and ``lam = 0.5`` (the document says only
0 <= lam <= 1). Candidates are scored on a fixed subset of the validation split (the document's
whole training set is far beyond this machine's budget); BatchNorm statistics of every
candidate are re-estimated on training images (no weight is trained). The budget is a number of
evaluations instead of generations (each generation is 20 candidates). BEST, the fittest
candidate, is then measured on the 10,000-image test split.

Run from the repository root (trains and caches the vgg_small baseline first if needed):

    .venv/bin/python studies/doc003_threshold_ga/run.py

It writes ``candidates.csv``, ``best_by_generation.csv``, ``results.csv``, ``threshold_ga.png``
and ``record.json`` next to this file and prints the table.
"""

import argparse
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import save_figure, write_csv, write_record  # noqa: E402

import moprune  # noqa: E402
from moprune.scoring import ThresholdScore  # noqa: E402
from moprune.train import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED = [  # (model, base test %, pruned test %, params removed %, FLOPs removed %)
    ("document 003: VGG16, CIFAR-10", 86.87, 85.24, 38.82, 19.523),
    ("document 003: VGG19, SVHN", 92.43, 91.418, 21.011, 12.32),
]


def conv_layers(model):
    """Names of the model's convolutional layers (document 003 prunes filters only)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def best_by_generation(frame):
    """BEST after every generation: the fittest candidate evaluated so far (the document's figures 4.1-4.3)."""
    rows = []
    best = None
    for gen, group in frame.groupby("generation", sort=True):
        top = group.loc[group["score"].idxmax()]
        if best is None or top["score"] > best["score"]:
            best = top
        rows.append({"generation": int(gen), "evaluations": int(group["evaluation"].max() + 1),
                     "eval": int(best["evaluation"]), "score": best["score"],
                     "accuracy_drop_points": best["accuracy_drop_points"],
                     "params_removed_pct": best["params_removed_pct"], "macs_removed_pct": best["macs_removed_pct"],
                     "channels_removed": int(best["channels_removed"])})
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg_small")
    parser.add_argument("--evals", type=int, default=470, help="candidates evaluated (50, then 20 per generation)")
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--bn-batches", type=int, default=4, help="training batches of 250 for BN re-estimation")
    parser.add_argument("--pop-size", type=int, default=50, help="I")
    parser.add_argument("--parents", type=int, default=10, help="K")
    parser.add_argument("--mutation-prob", type=float, default=0.0002, help="P, per gene")
    parser.add_argument("--population-threshold", type=int, default=300, help="T")
    parser.add_argument("--threshold", type=float, default=2.0, help="acceptable accuracy drop, points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=HERE, help="folder of the outputs (default: next to this file)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = moprune.load_mnist()
    t0 = time.perf_counter()
    base = moprune.pretrained(args.model, data=splits, progress=False)
    baseline_s = time.perf_counter() - t0
    base_test = evaluate(base, splits.test)
    layers = conv_layers(base)
    space = moprune.ChannelSpace(base, encoding="binary", layers=layers)
    evaluator = moprune.Evaluator(splits.val, n_samples=args.val_samples, train_data=splits.train,
                                  bn_batches=args.bn_batches, num_threads=args.threads, seed=args.seed,
                                  finetune=None)  # Algorithm 1 has no fine-tuning
    problem = moprune.PruningProblem(space, evaluator, objectives=("error", "params"))
    scoring = ThresholdScore(threshold=args.threshold, epsilon=10.0, lam=0.5, cost="params")
    t0 = time.perf_counter()
    result = moprune.search(problem, "threshold_ga", pop_size=args.pop_size, n_evals=args.evals, seed=args.seed,
                            n_parents=args.parents, mutation_prob=args.mutation_prob,
                            population_threshold=args.population_threshold, scoring=scoring)
    search_s = time.perf_counter() - t0

    frame = moprune.to_frame(result)
    frame["evaluation"] = np.arange(len(frame))
    frame["score"] = -np.array([e.objectives[-1] for e in result.archive])
    frame["accuracy_drop_points"] = 100 * (result.base_accuracy - frame["accuracy"])
    frame["params_removed_pct"] = 100 * (1 - frame["params_ratio"])
    frame["macs_removed_pct"] = 100 * (1 - frame["macs_ratio"])
    frame["channels_removed"] = [int(space.n_genes - np.asarray(e.genome).sum()) for e in result.archive]
    columns = ["evaluation", "generation", "score", "accuracy", "accuracy_drop_points", "params_removed_pct",
               "macs_removed_pct", "channels_removed", "cached", "seconds"]
    write_csv(frame[columns], os.path.join(args.out, "candidates.csv"), index=False)
    history = best_by_generation(frame)
    write_csv(history, os.path.join(args.out, "best_by_generation.csv"), index=False)

    best_i = int(frame["score"].idxmax())
    best = result.archive[best_i]
    model = space.materialize(best.genome)
    evaluator._recalibrate_bn(model)  # the statistics the search measured it with
    pruned_test = evaluate(model, splits.test)
    n_channels = space.n_genes
    table = pd.DataFrame([
        {"model": f"{args.model} (MNIST), base", "test_accuracy": 100 * base_test, "params": space.base_params,
         "macs": space.base_macs, "params_removed_pct": 0.0, "macs_removed_pct": 0.0, "test_drop_points": 0.0,
         "val_drop_points": 0.0},
        {"model": f"{args.model} (MNIST), BEST (eval {best_i}, {n_channels - int(np.sum(best.genome))} of "
                  f"{n_channels} filters removed)",
         "test_accuracy": 100 * pruned_test, "params": best.params, "macs": best.macs,
         "params_removed_pct": 100 * (1 - best.params_ratio), "macs_removed_pct": 100 * (1 - best.macs_ratio),
         "test_drop_points": 100 * (base_test - pruned_test),
         "val_drop_points": 100 * (result.base_accuracy - best.accuracy)},
        *[{"model": name, "test_accuracy": pruned, "params": np.nan, "macs": np.nan, "params_removed_pct": params,
           "macs_removed_pct": flops, "test_drop_points": base_acc - pruned, "val_drop_points": np.nan}
          for name, base_acc, pruned, params, flops in PUBLISHED],
    ])
    write_csv(table, os.path.join(args.out, "results.csv"), index=False)

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    ax = axes[0, 0]
    ok = frame[np.isfinite(frame["accuracy"])]
    ax.scatter(ok["params_removed_pct"], ok["accuracy_drop_points"], s=6, c=ok["evaluation"], cmap="viridis",
               label="every candidate (colour: evaluation order)")
    ax.scatter([100 * (1 - best.params_ratio)], [100 * (result.base_accuracy - best.accuracy)], marker="*", s=200,
               color="red", zorder=5, label="BEST")
    ax.axhline(args.threshold, color="black", linestyle=":", label=f"threshold {args.threshold:g} points")
    ax.set_ylim(-1, max(8.0, 2 * args.threshold))
    ax.set_xlabel("parameters removed, %")
    ax.set_ylabel(f"accuracy drop, points (validation, {args.val_samples} images)")
    ax.legend(fontsize=7)
    for ax, column, label in ((axes[0, 1], "accuracy_drop_points", "accuracy drop of BEST, points (validation)"),
                              (axes[1, 0], "params_removed_pct", "parameters removed by BEST, %"),
                              (axes[1, 1], "macs_removed_pct", "MACs removed by BEST, %")):
        ax.plot(history["generation"], history[column], marker="o", markersize=2)
        ax.set_xlabel("generation")
        ax.set_ylabel(label)
    axes[0, 1].axhline(args.threshold, color="black", linestyle=":")
    fig.suptitle(f"document 003's threshold GA on {args.model} (MNIST) conv filters, {len(frame)} evaluations, "
                 f"seed {args.seed}")
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, "threshold_ga.png"))
    plt.close(fig)

    record = write_record(args.out, wall_s=time.perf_counter() - start, extra={
        "baseline_load_or_train_s": round(baseline_s, 1), "search_s": round(search_s, 1),
        "evaluations": len(frame), "generations": int(frame["generation"].max() + 1),
        "base_val_subset_accuracy": round(result.base_accuracy, 4), "base_test_accuracy": round(base_test, 4)})
    pd.set_option("display.width", 200)
    print(table.round(3).to_string(index=False))
    print(history.tail(5).round(3).to_string(index=False))
    print(f"search {search_s:.0f} s; wall time {record['wall_s']:.0f} s; {record['command']}")


if __name__ == "__main__":
    main()
