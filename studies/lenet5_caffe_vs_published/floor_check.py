"""Search only: does the per-group floor keep study 7's default search from its smallest models?

For each seed, the study's search (population 20, 300 evaluations, 10 fine-tuning steps, 1,000
validation images) with the default floor and without it (``max_imbalance=None``); prints the
smallest MACs (and its parameter ratio) among candidates within 2, 5 and 10 search-time points of
the base. No retraining. Run from the repository root::

    .venv/bin/python studies/lenet5_caffe_vs_published/floor_check.py --seeds 0 1 2 3 4 --threads 2
"""

import argparse

import numpy as np
import torch
from run import BASELINE_RECIPE  # the study's strong baseline

import moprune


def smallest_within(frame, points):
    """``(macs_ratio, params_ratio)`` of the smallest candidate within ``points`` of the base."""
    ok = frame[frame["error_message"].isna() & (frame["accuracy_drop"] <= points + 1e-9)]
    if not len(ok):
        return np.nan, np.nan
    row = ok.loc[ok["macs_ratio"].idxmin()]
    return float(row["macs_ratio"]), float(row["params_ratio"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = moprune.load_mnist()
    base = moprune.pretrained("lenet5_caffe", data=splits, progress=False, **BASELINE_RECIPE)
    space = moprune.ChannelSpace(base, encoding="binary")
    print("seed  floor  smallest MACs (params) within 2 / 5 / 10 points")
    for seed in args.seeds:
        for label, options in (("auto", {}), ("none", {"max_imbalance": None})):
            evaluator = moprune.Evaluator(splits.val, n_samples=1000, finetune=10, train_data=splits.train,
                                          n_train_samples=5000, seed=seed, num_threads=args.threads)
            problem = moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))
            frame = moprune.to_frame(moprune.search(problem, pop_size=20, n_evals=300, seed=seed, **options))
            cells = [smallest_within(frame, p) for p in (2, 5, 10)]
            print(f"{seed:4d}  {label:5s}  " + " / ".join(f"{100 * m:.2f}% ({100 * q:.1f}%)" for m, q in cells),
                  flush=True)


if __name__ == "__main__":
    main()
