"""Which channels to keep: each importance criterion's uniform models after equal retraining.

Uniform pruning keeps the same fraction of every group; which channels it keeps is the space's
importance ranking (``ChannelSpace(importance=...)``). For each MACs target this builds, under
each criterion, the largest uniform model at or below it (a grid of 400 keep ratios, as
``bench_peers.py --retrain-twins`` does: the channel counts are the same under every criterion,
only the chosen channels differ), retrains it with the same budget under several retraining
seeds, and reports test accuracy: mean, and each criterion's difference from ``l1`` paired by
seed (mean and standard error). The test split is read only after retraining; Taylor scores
are computed on training images.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_importance.py --model mnist_cnn --data mnist --targets 0.0883 0.0422 \\
        --importances l1 taylor --seeds 0 1 2 --out benchmarks/results/bench_importance_mnist_cnn.txt
"""

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch
from bench_peers import uniform_at_most  # a sibling script: the largest uniform model at or below a target

import moprune
from moprune.io import atomic_path
from moprune.models.baselines import baseline_recipe


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.0883, 0.0422], help="MACs ratios")
    parser.add_argument("--importances", nargs="+", default=["l1", "taylor"], choices=["l1", "taylor", "random"])
    parser.add_argument("--taylor-batches", type=int, default=8, help="training batches of 128 for Taylor scores")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="retraining seeds")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--augment", default="recipe", choices=["recipe", "none"],
                        help="retraining augmentation: the baseline recipe's (Fashion-MNIST: flip+crop) or none "
                             "(as moprune.retrain and bench_peers.py retrain by default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start_all = time.perf_counter()

    splits = moprune.load_mnist() if args.data == "mnist" else moprune.load_fashion_mnist()
    model = moprune.pretrained(args.model, data=args.data, progress=False)
    augment = baseline_recipe(args.model, args.data).get("augment") if args.augment == "recipe" else None
    rows = []
    for importance in args.importances:
        extra = {"importance_data": splits.train, "importance_batches": args.taylor_batches} \
            if importance == "taylor" else {}
        space = moprune.ChannelSpace(model, encoding="binary", importance=importance, **extra)
        for target in args.targets:
            genome = uniform_at_most(space, target).genome
            macs = float(space.cost(genome[None, :])["macs_ratio"][0])
            for seed in args.seeds:
                done = moprune.retrain((space, genome), data=splits, base_model=model, epochs=args.epochs,
                                       lr=args.lr, seed=seed, augment=augment)
                rows.append({"importance": importance, "target_macs": target, "macs_ratio": macs, "seed": seed,
                             "val_accuracy": done.val_accuracy, "test_accuracy": done.test_accuracy})
                print(f"{importance:7s} {100 * macs:5.2f}% MACs seed {seed}: test {100 * done.test_accuracy:.2f}%",
                      flush=True)
    frame = pd.DataFrame(rows)
    l1 = frame[frame["importance"] == "l1"].set_index(["target_macs", "seed"])["test_accuracy"]
    lines = [f"# bench_importance {args}", f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"moprune {moprune.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"wall {time.perf_counter() - start_all:.0f} s",
             f"uniform models of {args.model} ({args.data}) retrained {args.epochs} epoch(s) at lr {args.lr} "
             f"(augment {augment}), retraining seeds {args.seeds}; test split",
             "", f"{'importance':10s} {'MACs':>7s} {'test % (mean)':>14s} {'val % (mean)':>13s} {'vs l1 (points)':>16s}"]
    for (importance, target), group in frame.groupby(["importance", "target_macs"], sort=False):
        diff = 100 * (group.set_index(["target_macs", "seed"])["test_accuracy"] - l1).dropna()
        vs = "" if importance == "l1" or diff.empty else \
            f"{diff.mean():+.2f} +- {diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float('nan'):.2f}"
        lines.append(f"{importance:10s} {100 * group['macs_ratio'].iloc[0]:6.2f}% {100 * group['test_accuracy'].mean():14.2f} "
                     f"{100 * group['val_accuracy'].mean():13.2f} {vs:>16s}")
    text = "\n".join(lines)
    print(text)
    if args.out:  # the table, then every retrained model (written whole or not at all)
        with atomic_path(args.out) as tmp, open(tmp, "w") as f:
            f.write(text + "\n")
        with atomic_path(os.path.splitext(args.out)[0] + ".csv") as tmp:
            frame.to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
