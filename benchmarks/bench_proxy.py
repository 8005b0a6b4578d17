"""Which search-time accuracy ranks candidates the way retraining will?

The search ranks candidates by an accuracy measured before any retraining (a proxy); the user
ends with the accuracy after retraining. This takes candidates from the region users pick from
(a default search on ``mnist_cnn``'s channels; those within ``--band`` points of the base, spread
over MACs), measures each proxy on the same 1,000-image validation subset, retrains every
candidate with the same budget (``--epochs`` on the training split) and
reports Spearman's rank correlation between each proxy and the retrained accuracy on the full
validation split, with the seconds each proxy costs per candidate.

Proxies: no fine-tuning; ``--steps`` SGD fine-tuning steps in the loop (document 000), at
several step counts.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_proxy.py --candidates 24 --out benchmarks/results/bench_proxy.txt
"""

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch

import moprune
from moprune.retraining import front_points


def spearman(a, b):
    """Spearman's rank correlation (average ranks for ties), through pandas."""
    return float(pd.Series(a).corr(pd.Series(b), method="spearman"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--band", type=float, default=5.0)
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 50])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--evals", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    splits = moprune.load_mnist()
    model = moprune.pretrained("mnist_cnn", progress=False)
    space = moprune.ChannelSpace(model, encoding="binary")
    problem = moprune.PruningProblem(space, moprune.Evaluator(splits.val, n_samples=args.samples, num_threads=1))
    result = moprune.search(problem, n_evals=args.evals, seed=args.seed)
    frame = moprune.to_frame(result)
    region = frame[(frame["accuracy_drop"] <= args.band) & frame["error_message"].isna()]
    region = region[~region["plan_key"].duplicated()]
    chosen = front_points(region, args.candidates)  # spread over log-MACs, not only the front
    print(f"{len(chosen)} candidates within {args.band} points, MACs {100 * chosen['macs_ratio'].min():.1f}%"
          f"-{100 * chosen['macs_ratio'].max():.1f}%", flush=True)

    proxies = {"no fine-tuning": (chosen["accuracy"].to_numpy(), np.mean(chosen["seconds"]))}
    for steps in args.steps:
        evaluator = moprune.Evaluator(splits.val, n_samples=args.samples, num_threads=1, finetune=steps,
                                      train_data=splits.train, n_train_samples=5000)
        start = time.perf_counter()
        records = evaluator.evaluate(space, np.stack(chosen["genome"].to_list()))
        proxies[f"{steps} fine-tuning steps"] = (np.array([r.accuracy for r in records]),
                                                 (time.perf_counter() - start) / len(records))
    retrained = []
    for genome in chosen["genome"]:
        torch.manual_seed(args.seed)
        done = moprune.retrain((space, genome), data=splits, base_model=model, epochs=args.epochs,
                               seed=args.seed)
        retrained.append(done.val_accuracy)
    retrained = np.array(retrained)
    lines = [f"# bench_proxy {args}", f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"moprune {moprune.__version__}, {time.strftime('%Y-%m-%d %H:%M')}",
             f"{len(chosen)} candidates of mnist_cnn (binary channels) within {args.band} points of the base, "
             f"MACs {100 * chosen['macs_ratio'].min():.1f}%-{100 * chosen['macs_ratio'].max():.1f}%; "
             f"retrained {args.epochs} epoch(s) each, validation accuracy after retraining "
             f"{100 * retrained.min():.2f}%-{100 * retrained.max():.2f}%",
             "", f"{'proxy':28s} {'Spearman vs retrained':>22s} {'s per candidate':>16s}"]
    for name, (values, seconds) in proxies.items():
        lines.append(f"{name:28s} {spearman(values, retrained):22.3f} {seconds:16.3f}")
    lines.append(f"{'MACs alone':28s} {spearman(chosen['macs_ratio'].to_numpy(), retrained):22.3f} {0:16.3f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
