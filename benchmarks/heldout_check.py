"""Do the models that match or beat the base during a search still do so on held-out images?

A search scores candidates on a fixed validation subset (1,000 images here, as in
``bench_peers.py``); on so few images one image is 0.1 point, and a pruned model can score one
or two images above the base by chance. This runs one search (``moprune.search`` with its
default, plus any ``--option``), takes every candidate that scored no worse than the base on the
subset, and measures it and the base on the validation images *outside* the subset (9,000 for
MNIST; never the test split). Printed per candidate: MACs, drop on the subset, drop held out.

Run: ``.venv/bin/python benchmarks/heldout_check.py --seed 0 --evals 1000 [--option head_share=0.1]``
(committed output: ``benchmarks/results/heldout_check*.txt``).
"""

import argparse
import platform
import time

import numpy as np
import torch
from bench_peers import heldout_split, search_option  # a sibling script: --option KEY=VALUE, held-out images

import moprune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--encoding", default="ratio", choices=["ratio", "binary"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evals", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", type=search_option)
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = moprune.load_mnist()
    model = moprune.pretrained(args.model, progress=False)
    space = moprune.ChannelSpace(model, encoding=args.encoding)
    evaluator = moprune.Evaluator(splits.val, n_samples=args.samples, num_threads=1, finetune=None)
    problem = moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))
    moprune.search(problem, n_evals=args.evals, seed=args.seed, **dict(args.option))
    base = problem.base_accuracy
    held = heldout_split(evaluator, splits.val)  # the validation images outside the search's subset
    held_evaluator = moprune.Evaluator(held, n_samples=None, num_threads=1, finetune=None)
    held_base = held_evaluator.evaluate_model(model)
    kept = sorted((e for e in problem.archive if np.isfinite(e.accuracy) and e.accuracy >= base),
                  key=lambda e: e.macs_ratio)
    print(f"# heldout_check: {args.model}:{args.encoding} seed {args.seed}, {args.evals} evaluations, options "
          f"{dict(args.option) or 'none'}; {platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# base: {100 * base:.2f}% on the {len(evaluator.val_subset)}-image subset, {100 * held_base:.2f}% on "
          f"{len(held)} held-out validation images; {len(kept)} candidates no worse than the base on the "
          f"subset, {sum(e.accuracy > base for e in kept)} better")
    print(f"{'MACs %':>8s} {'drop on subset':>15s} {'drop held out':>14s}")
    drops = []
    for entry, record in zip(kept, held_evaluator.evaluate(space, np.array([e.genome for e in kept]))):
        drops.append(100 * (held_base - record.accuracy))
        print(f"{100 * entry.macs_ratio:8.2f} {100 * (base - entry.accuracy):+15.2f} {drops[-1]:+14.2f}")
    if drops:
        better = [d for e, d in zip(kept, drops) if e.accuracy > base]
        print(f"# held out: mean drop {np.mean(drops):+.2f} points over all {len(drops)}, "
              f"{np.mean(better) if better else float('nan'):+.2f} over the {len(better)} better on the subset; "
              f"{sum(d <= 0 for d in drops)} no worse than the base held out")


if __name__ == "__main__":
    main()
