"""Document 000 reproduced: a weighted-sum GA over mnist_cnn's conv channels, fine-tuning in the loop.

Document 000 encodes every conv channel of its CNN (conv 32 -> conv 64 -> fc 1024 -> fc 10) as a
bit, fine-tunes each candidate briefly on a training subset, scores it with
``w_acc * accuracy + w_macs * (1 - MACs/MACs_base)`` (eq. 1), evolves with tournament selection,
uniform crossover, bit-flip mutation and one elite, caches fitness, then retrains the best
chromosome on the full training split and reports test accuracy. It gives no weights, so this
runs two: equal weights (1, 1) and accuracy-heavy (1, 0.1: one accuracy point is worth ten
points of MACs). Beside them, moprune's default search on the same channels with the same
budget and fine-tuning, its front retrained and the smallest model within 0.3 validation points
of the base picked: what ``make demo`` does.

Run from the repository root:

    .venv/bin/python studies/doc000_weighted_ga/run.py

It writes ``results.csv``, ``front.png`` and ``record.json`` next to this file and prints the table.
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

from common import save_figure, write_csv, write_record  # noqa: E402

import moprune  # noqa: E402
from moprune.train import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = {"ga (w_acc 1, w_macs 1)": {"w_acc": 1.0, "w_macs": 1.0},
           "ga (w_acc 1, w_macs 0.1)": {"w_acc": 1.0, "w_macs": 0.1}}
PICK_DROP = 0.3
PICK_MARGIN_SE = 1.0
"""The default search's pick: the smallest retrained model within this many validation points, by a margin of
this many standard errors of its drop (what ``make demo`` does)."""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pop-size", type=int, default=20)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--finetune-steps", type=int, default=20, help="fine-tuning steps per candidate (batch 128)")
    parser.add_argument("--epochs", type=int, default=2, help="retraining epochs on the full training split")
    parser.add_argument("--lr", type=float, default=0.01, help="retraining learning rate (cosine decay)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = moprune.load_mnist()
    base = moprune.pretrained("mnist_cnn", data=splits, progress=False)
    space = moprune.ChannelSpace(base, encoding="binary", layers=["conv1", "conv2"])  # conv channels only
    n_evals = args.pop_size * args.generations
    base_test = evaluate(base, splits.test)

    def problem():
        evaluator = moprune.Evaluator(splits.val, n_samples=1000, finetune=args.finetune_steps,
                                      train_data=splits.train, n_train_samples=5000, seed=args.seed,
                                      num_threads=args.threads)
        return moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))

    rows, fronts = [], {}
    for name, weights in WEIGHTS.items():
        t0 = time.perf_counter()
        result = moprune.search(problem(), "ga", scoring="weighted", scoring_options=weights, n_elites=1,
                                pop_size=args.pop_size, n_evals=n_evals, seed=args.seed)
        search_s = time.perf_counter() - t0
        # the highest weighted score (the archive's last objective is -score), as document 000 keeps
        best = min((e for e in result.archive if e.error is None), key=lambda e: e.objectives[-1])
        t0 = time.perf_counter()
        done = moprune.retrain((space, best.genome), data=splits, base_model=base, epochs=args.epochs, lr=args.lr,
                               seed=args.seed)
        rows.append({"method": name, "evaluations": len(result.archive),
                     "cache_hits": sum(e.cached for e in result.archive),
                     "search_val_accuracy": best.accuracy, "val_accuracy": done.val_accuracy,
                     "test_accuracy": done.test_accuracy, "macs_ratio": done.macs_ratio,
                     "params_ratio": done.params_ratio, "search_s": round(search_s), "retrain_s":
                     round(time.perf_counter() - t0)})
        fronts[name] = moprune.pareto_front(result)
        print(rows[-1], flush=True)

    t0 = time.perf_counter()
    result = moprune.search(problem(), pop_size=args.pop_size, n_evals=n_evals, seed=args.seed)
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    retrained = moprune.retrain_front(result, data=splits, base_model=base, n_points=4, epochs=args.epochs,
                                      lr=args.lr, max_drop=2.0, max_macs=0.1, seed=args.seed)
    try:
        row = moprune.pick(retrained, "max_drop", max_drop=PICK_DROP, margin_se=PICK_MARGIN_SE)
    except moprune.MopruneValueError:
        row = retrained.loc[retrained["accuracy"].idxmax()]
    rows.append({"method": "moprune default (focused, 4 front points retrained)", "evaluations": len(result.archive),
                 "cache_hits": sum(e.cached for e in result.archive),
                 "search_val_accuracy": row["search_accuracy"], "val_accuracy": row["accuracy"],
                 "test_accuracy": row["test_accuracy"], "macs_ratio": row["macs_ratio"],
                 "params_ratio": row["params_ratio"], "search_s": round(search_s),
                 "retrain_s": round(time.perf_counter() - t0)})
    fronts["moprune default"] = moprune.pareto_front(result)
    table = pd.DataFrame(rows)
    table.insert(1, "base_test_accuracy", base_test)
    table["test_drop_points"] = 100 * (base_test - table["test_accuracy"])
    table["macs_reduction"] = 1 - table["macs_ratio"]
    table["params_reduction"] = 1 - table["params_ratio"]
    write_csv(table, os.path.join(HERE, "results.csv"), index=False)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, front in fronts.items():
        front = front.sort_values("macs_ratio")
        ax.step(100 * front["macs_ratio"], 100 * front["accuracy"], where="post", marker=".", label=name)
    ax.set_xscale("log")
    ax.set_ylim(90, 100)
    ax.set_xlabel("MACs, % of the base (log)")
    ax.set_ylabel(f"validation accuracy during search (1,000 images, {args.finetune_steps} fine-tuning steps), %")
    ax.set_title(f"mnist_cnn conv channels: Pareto fronts of {n_evals} evaluations")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(HERE, "front.png"))
    plt.close(fig)

    record = write_record(HERE, wall_s=time.perf_counter() - start, extra={"base_test_accuracy": round(base_test, 4)})
    pd.set_option("display.width", 200)
    print(table.round(4).to_string(index=False))
    print(f"wall time {record['wall_s']:.0f} s; {record['command']}")


if __name__ == "__main__":
    main()
