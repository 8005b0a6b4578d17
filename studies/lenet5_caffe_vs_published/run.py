"""LeNet-5-Caffe on MNIST: moprune's retrained front against published structured pruning.

The default search (``"focused"``) prunes the channels and neurons of ``lenet5_caffe`` (20-50-500-10),
each candidate fine-tuned 10 steps and scored on 1,000 validation images; the small front points
are then retrained with one budget (10 epochs, lr 0.02 with cosine decay, +-2 pixel shifts, as the
baseline) and measured on the full validation and test splits. The same
retraining is given to uniform pruning (the same keep ratio in every layer, L1-ranked) at matched
MACs, the baseline a plain Torch-Pruning user gets. MACs are thop's count (a multiply-add is one,
biases, ReLU and pooling not counted).

Run from the repository root:

    .venv/bin/python studies/lenet5_caffe_vs_published/run.py

It writes ``retrained_fronts.csv``, ``uniform.csv``, ``summary.csv``, ``front.png`` and
``record.json`` next to this file, and prints the tables.
"""

import argparse
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import save_figure, uniform_genome, write_csv, write_record  # noqa: E402

import moprune  # noqa: E402
from moprune.train import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED = pd.DataFrame([
    ("SSL", 0.9900, 0.256), ("L0-sep", 0.990, 0.176), ("SBP", 0.9914, 0.095), ("BC-GHS", 0.990, 0.069)],
    columns=["method", "test_accuracy", "macs_ratio"])
"""Published structured pruning of LeNet-5-Caffe on MNIST (test accuracy, FLOPs as a fraction of the base)."""
TARGETS = [(0.9914, 0.095), (0.990, 0.060)]
"""This study's targets: a retrained point with at least this test accuracy at no more than these MACs."""
BASELINE_RECIPE = {"epochs": 20, "augment": "crop"}
"""lenet5_caffe trained 20 epochs with +-2 pixel shifts (the zoo's 8 epochs reach 99.20% test, 20 without
shifts 99.25%; the published baselines report 99.1-99.4%)."""




def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--pop-size", type=int, default=20)
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--points", type=int, default=5, help="front points retrained per seed")
    parser.add_argument("--epochs", type=int, default=10, help="retraining epochs of every model")
    parser.add_argument("--lr", type=float, default=0.02, help="retraining learning rate (cosine decay)")
    parser.add_argument("--max-macs", type=float, default=0.12, help="retrain front points up to this MACs ratio")
    parser.add_argument("--max-drop", type=float, default=10.0,
                        help="retrain front points within this many points of the base during search")
    parser.add_argument("--no-floor", action="store_true",
                        help="search without the per-group floor (max_imbalance=None)")
    parser.add_argument("--budget", type=float, default=None,
                        help="search under this MACs ratio (search(..., max_macs=BUDGET)); default: no budget")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=HERE, help="folder of the outputs (default: next to this file)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)  # before the run, not after 17 minutes of it
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = moprune.load_mnist()
    base = moprune.pretrained("lenet5_caffe", data=splits, progress=False, **BASELINE_RECIPE)
    space = moprune.ChannelSpace(base, encoding="binary")
    fronts, searches = [], []
    for seed in range(args.seeds):
        evaluator = moprune.Evaluator(splits.val, n_samples=1000, finetune=10, train_data=splits.train,
                                      n_train_samples=5000, seed=seed, num_threads=args.threads)
        problem = moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))
        t0 = time.perf_counter()
        result = moprune.search(problem, pop_size=args.pop_size, n_evals=args.pop_size * args.generations,
                                seed=seed, max_macs=args.budget,
                                **({"max_imbalance": None} if args.no_floor else {}))
        search_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        front = moprune.retrain_front(result, data=splits, base_model=base, n_points=args.points,
                                      epochs=args.epochs, lr=args.lr, max_drop=args.max_drop, max_macs=args.max_macs,
                                      seed=seed, augment="crop")
        front["seed"] = seed
        fronts.append(front.drop(columns=["genome", "path"]))
        searches.append(moprune.pareto_front(result).assign(seed=seed))
        print(f"seed {seed}: search {len(result.archive)} candidates in {search_s:.0f} s, "
              f"{len(front)} points retrained in {time.perf_counter() - t0:.0f} s", flush=True)
    retrained = pd.concat(fronts).reset_index()
    base_test = evaluate(base, splits.test)

    # uniform pruning at the MACs of each published point and of the targets, retrained the same way
    uniform_rows = []
    for target in (0.04, 0.06, 0.095, 0.15):
        genome = uniform_genome(space, target)
        done = moprune.retrain((space, genome), data=splits, base_model=base, epochs=args.epochs, lr=args.lr, seed=0,
                               augment="crop")
        uniform_rows.append({"target_macs": target, "macs_ratio": done.macs_ratio, "params_ratio": done.params_ratio,
                             "accuracy": done.val_accuracy, "test_accuracy": done.test_accuracy})
    uniform = pd.DataFrame(uniform_rows)

    summary = []
    for accuracy, macs in TARGETS:
        ok = retrained[(retrained["test_accuracy"] >= accuracy) & (retrained["macs_ratio"] <= macs + 1e-12)]
        best = retrained[retrained["macs_ratio"] <= macs + 1e-12]
        best = best.loc[best["test_accuracy"].idxmax()] if len(best) else None
        summary.append({
            "target": f">= {100 * accuracy:.2f}% at <= {100 * macs:.1f}% MACs",
            "seeds_meeting_it": int(ok["seed"].nunique()),
            "seeds": args.seeds,
            "best_test_accuracy_within_macs": None if best is None else round(100 * best["test_accuracy"], 2),
            "its_macs_pct": None if best is None else round(100 * best["macs_ratio"], 2),
            "its_seed": None if best is None else int(best["seed"]),
        })
    summary = pd.DataFrame(summary)

    write_csv(retrained, os.path.join(args.out, "retrained_fronts.csv"), index=False)
    write_csv(uniform, os.path.join(args.out, "uniform.csv"), index=False)
    write_csv(summary, os.path.join(args.out, "summary.csv"), index=False)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for seed, group in retrained.groupby("seed"):
        group = group.sort_values("macs_ratio")
        ax.plot(100 * group["macs_ratio"], 100 * group["test_accuracy"], "o-", label=f"moprune, seed {seed}")
    ax.plot(100 * uniform["macs_ratio"], 100 * uniform["test_accuracy"], "s--", color="gray",
            label="uniform keep ratio")
    ax.scatter(100 * PUBLISHED["macs_ratio"], 100 * PUBLISHED["test_accuracy"], marker="*", s=160, color="black",
               zorder=5, label="published")
    for _, row in PUBLISHED.iterrows():
        ax.annotate(row["method"], (100 * row["macs_ratio"], 100 * row["test_accuracy"]), textcoords="offset points",
                    xytext=(5, -12))
    ax.axhline(100 * base_test, color="green", linestyle=":", label=f"base {100 * base_test:.2f}%")
    ax.set_xscale("log")
    ax.set_xlabel("MACs, % of the base (log)")
    ax.set_ylabel("test accuracy after retraining, %")
    ax.set_ylim(max(97.5, 100 * min(retrained["test_accuracy"].min(), uniform["test_accuracy"].min()) - 0.1),
                100 * base_test + 0.2)
    ax.set_title(f"LeNet-5-Caffe on MNIST: retrained {args.epochs} epochs")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(args.out, "front.png"))
    plt.close(fig)

    record = write_record(args.out, wall_s=time.perf_counter() - start,
                          extra={"base_test_accuracy": round(base_test, 4),
                                 "base_val_accuracy": round(evaluate(base, splits.val), 4)})
    pd.set_option("display.width", 160)
    print(f"base test accuracy {100 * base_test:.2f}%")
    print(retrained.round(4).to_string(index=False))
    print(uniform.round(4).to_string(index=False))
    print(summary.to_string(index=False))
    print(f"wall time {record['wall_s']:.0f} s; {record['command']}")


if __name__ == "__main__":
    main()
