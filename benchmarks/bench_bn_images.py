"""How many training images does BatchNorm re-estimation need?

A channel-pruned candidate of a model with BatchNorm is measured after its running statistics
are re-estimated on training images (adaptive BN, ``Evaluator(..., train_data=...)``). On
``resnet8`` that pass costs more than the measurement itself. This measures, for the same
candidates, the validation-subset accuracy after re-estimating on ``--images`` training images
each (whole batches of 250) against a reference of ``--reference`` images, and the CPU time per
candidate (one thread): mean and largest absolute accuracy difference (points), Spearman rank
correlation with the reference, the same restricted to candidates within 10 points of the base,
and how much faster each is than 2,500 images (``bn_batches=10``, the default before session 15).

Candidates: ``--candidates`` ratio genomes, each a keep ratio drawn log-uniformly between
``--low`` and 1 with per-group noise (x exp(N(0, 0.15)), clipped), the same for every setting
(without fine-tuning, ``resnet8`` candidates keeping less than about half the channels score far
below the base, outside the region the search works in).

Run: ``.venv/bin/python benchmarks/bench_bn_images.py --models resnet8 vgg_small --data fashion-mnist``
(output: ``benchmarks/results/bench_bn_images.txt``).
"""

import argparse
import platform
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

import moprune

BATCH = 250


def candidates(space: moprune.ChannelSpace, n: int, rng: np.random.Generator, low: float) -> np.ndarray:
    """``n`` ratio genomes around log-uniform keep ratios in [low, 1]."""
    levels = np.exp(rng.uniform(np.log(low), 0.0, size=n))
    ratios = levels[:, None] * np.exp(rng.normal(0.0, 0.15, size=(n, len(space.group_slices))))
    return space.genomes_from_ratios(np.clip(ratios, 0.05, 1.0))


def measure(space, splits, X, images, samples):
    """Accuracies of ``X`` after re-estimating BN on ``images`` training images, and CPU s per candidate."""
    evaluator = moprune.Evaluator(splits.val, n_samples=samples, num_threads=1, train_data=splits.train,
                                  n_train_samples=max(images, 5000), bn_batches=images // BATCH,
                                  bn_batch_size=BATCH, finetune=None, cache=False)
    start = time.process_time()
    records = evaluator.evaluate(space, X)
    return np.array([r.accuracy for r in records]), (time.process_time() - start) / len(X)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet8", "vgg_small"])
    parser.add_argument("--data", choices=["mnist", "fashion-mnist"], default="fashion-mnist")
    parser.add_argument("--images", nargs="+", type=int, default=[250, 500, 1000, 2500])
    parser.add_argument("--reference", type=int, default=5000)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--low", type=float, default=0.5, help="smallest keep ratio level drawn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = moprune.load_fashion_mnist() if args.data == "fashion-mnist" else moprune.load_mnist()
    print(f"# bench_bn_images: {args.data}, {args.candidates} candidates, {args.samples} validation images, "
          f"reference {args.reference} BN images; {platform.machine()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    rows = []
    for name in args.models:
        model = moprune.pretrained(name, progress=False, data=args.data)
        space = moprune.ChannelSpace(model, encoding="ratio")
        X = candidates(space, args.candidates, np.random.default_rng(args.seed), args.low)
        ref, ref_s = measure(space, splits, X, args.reference, args.samples)
        base = moprune.Evaluator(splits.val, n_samples=args.samples, num_threads=1).evaluate_model(model)
        near = ref >= base - 0.10
        default_s = None
        for images in sorted(set(args.images) | {2500}):
            acc, seconds = measure(space, splits, X, images, args.samples)
            default_s = seconds if images == 2500 else default_s
            diff = 100 * np.abs(acc - ref)
            rows.append({"model": name, "bn_images": images, "mean_abs_diff": diff.mean(), "max_abs_diff": diff.max(),
                         "spearman": spearmanr(acc, ref).statistic,
                         "near_n": int(near.sum()), "near_mean_abs_diff": diff[near].mean() if near.any() else np.nan,
                         "near_spearman": spearmanr(acc[near], ref[near]).statistic if near.sum() > 2 else np.nan,
                         "cpu_s": seconds})
        for row in rows:
            if row["model"] == name:
                row["speedup_vs_2500"] = default_s / row["cpu_s"]
        rows.append({"model": name, "bn_images": args.reference, "cpu_s": ref_s, "speedup_vs_2500": default_s / ref_s})
        print(f"# {name}: base {100 * base:.2f}%, reference accuracies {100 * ref.min():.1f}-{100 * ref.max():.1f}%, "
              f"{int(near.sum())} within 10 points of the base", flush=True)
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
