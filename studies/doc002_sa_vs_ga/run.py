"""Document 002 reproduced: simulated annealing vs a GA over LeNet-5's weight masks, no fine-tuning.

Document 002 prunes the 61,470 weights of LeNet-5 (6-16-120-84-10) with one mask bit per weight,
1,000 evaluations per algorithm, scoring accuracy against sparsity with a heavy penalty above a
maximum loss, simulated annealing annealing one layer after the other (its layer-wise mode) with
an adaptive mutation rate starting at 0.15, and a GA with population 12 and 2 elites. It reports
(TensorFlow, base 97.23%): GA 89.02% at 41.33% sparsity in 27 min 46 s, SA 87.44% at 43.84% in
11 min 43 s.

Here, each algorithm gets 1,000 evaluations on 1,000 validation images, no fine-tuning, seed 0 (more with ``--seeds``):

- mask space (one bit per weight): ``sa`` in layer-wise mode (1 chain, 200 iterations per layer)
  and ``layerwise_ga`` (population 12, 2 elites, 20 generations of 10 offspring per layer), both
  scoring ``accuracy + sparsity`` with the max-loss warm-up and penalty;
- per-layer ratio space (one keep fraction per layer, smallest weights pruned first): the same
  two, and the default ``focused`` search (error vs remaining weights).

Every algorithm's own final answer (best score, or for ``focused`` the sparsest candidate within
``--max-loss`` points) is measured on the test split, with its sparsity and wall time.

Run from the repository root:

    .venv/bin/python studies/doc002_sa_vs_ga/run.py

It writes ``results.csv``, ``fronts.png`` and ``record.json`` next to this file and prints the table.
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
PUBLISHED = [("document 002: GA (TensorFlow, layer-wise)", 0.9723, 0.8902, 0.4133, 27 * 60 + 46),
             ("document 002: SA (TensorFlow, layer-wise)", 0.9723, 0.8744, 0.4384, 11 * 60 + 43)]


def runs(max_loss):
    """(space encoding, label, algorithm, options) of every run."""
    sa = {"max_loss": max_loss, "mutation_rate": 0.15, "layerwise": True, "pop_size": 1}
    ga = {"max_loss": max_loss, "mutation_rate": 0.15, "layerwise": True, "pop_size": 12, "n_elites": 2}
    return [
        ("mask", "sa, layer-wise", "sa", sa),
        ("mask", "ga, layer-wise (pop 12, 2 elites)", "layerwise_ga", ga),
        ("ratio", "sa, layer-wise", "sa", sa),
        ("ratio", "ga, layer-wise (pop 12, 2 elites)", "layerwise_ga", ga),
        ("ratio", "focused (default)", "focused", {"pop_size": 20}),
    ]


def final_answer(result, algorithm, base_accuracy, max_loss):
    """The candidate the algorithm itself returns (best score), or the sparsest within ``max_loss``."""
    ok = [e for e in result.archive if e.error is None]
    if algorithm == "focused":
        within = [e for e in ok if 100 * (base_accuracy - e.accuracy) <= max_loss]
        return max(within or ok, key=lambda e: (e.sparsity, e.accuracy))
    if algorithm in ("sa", "layerwise_ga"):  # -score plus the drop penalty: their energy
        return min(ok, key=lambda e: e.objectives[-1] + max(0.0, 100 * (base_accuracy - e.accuracy) - max_loss))
    return min(ok, key=lambda e: e.objectives[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--max-loss", type=float, default=2.0, help="allowed accuracy drop in points")
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = moprune.load_mnist()
    base = moprune.pretrained("lenet5", data=splits, progress=False)
    base_test = evaluate(base, splits.test)
    spaces = {enc: moprune.WeightSpace(base, encoding=enc) for enc in ("mask", "ratio")}
    rows, fronts = [], []
    for encoding, label, algorithm, options in runs(args.max_loss):
        for seed in range(args.seeds):
            evaluator = moprune.Evaluator(splits.val, n_samples=args.val_samples, seed=seed, num_threads=args.threads)
            problem = moprune.PruningProblem(spaces[encoding], evaluator, objectives=("error", "params"))
            t0 = time.perf_counter()
            result = moprune.search(problem, algorithm, n_evals=args.evals, seed=seed, **options)
            seconds = time.perf_counter() - t0
            final = final_answer(result, algorithm, result.base_accuracy, args.max_loss)
            model = spaces[encoding].materialize(final.genome)
            rows.append({"space": encoding, "method": label, "seed": seed, "evaluations": len(result.archive),
                         "val_accuracy": final.accuracy, "test_accuracy": evaluate(model, splits.test),
                         "sparsity": final.sparsity, "seconds": round(seconds, 1)})
            front = moprune.pareto_front(result, objectives=("error", "params"))
            fronts.append(front[["accuracy", "sparsity"]].assign(space=encoding, method=label, seed=seed))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    summary = (table.groupby(["space", "method"], sort=False)
               .agg(seeds=("seed", "count"), evaluations=("evaluations", "mean"),
                    test_accuracy=("test_accuracy", "mean"), test_accuracy_min=("test_accuracy", "min"),
                    sparsity=("sparsity", "mean"), seconds=("seconds", "mean")).reset_index())
    published = pd.DataFrame([{"space": "mask", "method": name, "seeds": 1, "evaluations": 1000,
                               "test_accuracy": acc, "test_accuracy_min": acc, "sparsity": sp, "seconds": s}
                              for name, _, acc, sp, s in PUBLISHED])
    summary = pd.concat([summary, published], ignore_index=True)
    summary.insert(2, "base_test_accuracy", [base_test] * (len(summary) - len(published))
                   + [p[1] for p in PUBLISHED])
    write_csv(table, os.path.join(HERE, "runs.csv"), index=False)
    write_csv(summary, os.path.join(HERE, "results.csv"), index=False)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    fronts = pd.concat(fronts)
    for (encoding, label), group in fronts[fronts["seed"] == 0].groupby(["space", "method"], sort=False):
        group = group.sort_values("sparsity")
        ax.step(100 * group["sparsity"], 100 * group["accuracy"], where="post", label=f"{encoding}: {label}")
    for name, _, acc, sp, _ in PUBLISHED:
        ax.scatter([100 * sp], [100 * acc], marker="*", s=140, color="black", zorder=5)
        ax.annotate(name.split(": ")[1].split(" ")[0], (100 * sp, 100 * acc), textcoords="offset points",
                    xytext=(5, -10))
    ax.set_ylim(85, 100)
    ax.set_xlabel("sparsity (weights removed), %")
    ax.set_ylabel(f"validation accuracy ({args.val_samples} images, no fine-tuning), %")
    ax.set_title("LeNet-5 weight masks: fronts of every run, seed 0 (stars: document 002, test split)")
    ax.legend(fontsize=7)
    save_figure(fig, os.path.join(HERE, "fronts.png"))
    plt.close(fig)

    record = write_record(HERE, wall_s=time.perf_counter() - start, extra={"base_test_accuracy": round(base_test, 4)})
    pd.set_option("display.width", 200)
    print(summary.round(4).to_string(index=False))
    print(f"wall time {record['wall_s']:.0f} s; {record['command']}")


if __name__ == "__main__":
    main()
