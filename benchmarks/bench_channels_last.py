"""How much faster does the evaluator run candidates in channels-last memory format on the CPU?

For each zoo model (trained weights, MNIST validation images): the same 40 candidates (keep ratios
drawn at random per group, seeded; ratio encoding) are evaluated on 1,000 validation images by an
``Evaluator(channels_last=False)`` and by the default ``channels_last="auto"`` (channels-last on
the CPU), alternating in 3 rounds, 1 thread, CPU time. Printed: the median CPU seconds per
candidate of each, their ratio, and how many candidates' accuracies differ between the two
(floating-point rounding only; expected 0). Then training (:func:`moprune.train.fit`, which
trains channels-last on the CPU unless ``moprune.train.CPU_CHANNELS_LAST`` is off): 100 SGD
steps of batch 128 on the uniform half-width model of each zoo model, both ways, with the final
training losses (equal up to rounding).

Run: ``.venv/bin/python benchmarks/bench_channels_last.py`` (the committed output is
``benchmarks/results/bench_channels_last.txt``).
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

import moprune
import moprune.train


def per_candidate_seconds(space, X, val, channels_last):
    """CPU seconds per candidate of a fresh evaluator (no cache hits) and its accuracies."""
    evaluator = moprune.Evaluator(val, n_samples=1000, num_threads=1, device="cpu", channels_last=channels_last,
                                  finetune=None, bn_recalibration=False)
    start = time.process_time()
    records = evaluator.evaluate(space, X)
    return (time.process_time() - start) / len(X), np.array([r.accuracy for r in records])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist_cnn", "lenet5_caffe", "resnet8", "vgg_small"])
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# bench_channels_last: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, CPU time, 1 thread")
    print(f"{'model':14s} {'contiguous s':>13s} {'channels_last s':>16s} {'speed-up':>9s} {'accuracy diffs':>15s}")
    val = moprune.load_mnist().val
    for name in args.models:
        model = moprune.pretrained(name, progress=False)
        space = moprune.ChannelSpace(model, encoding="ratio")
        rng = np.random.default_rng(0)
        X = space.genomes_from_ratios(rng.uniform(0.05, 1.0, (args.candidates, len(space.group_slices))))
        times = {False: [], "auto": []}
        accuracies = {}
        for _ in range(args.rounds):
            for setting in times:
                seconds, accuracies[setting] = per_candidate_seconds(space, X, val, setting)
                times[setting].append(seconds)
        slow, fast = statistics.median(times[False]), statistics.median(times["auto"])
        diffs = int(np.sum(accuracies[False] != accuracies["auto"]))
        print(f"{name:14s} {slow:13.4f} {fast:16.4f} {slow / fast:8.2f}x {diffs:>8d} of {len(X)}", flush=True)
    print(f"\n{'fit, 100 steps':14s} {'contiguous s':>13s} {'channels_last s':>16s} {'speed-up':>9s} {'final losses':>15s}")
    train = moprune.load_mnist().train
    for name in args.models:
        model = moprune.pretrained(name, progress=False)
        space = moprune.ChannelSpace(model, encoding="ratio")
        half = space.genomes_from_ratios(np.full((1, len(space.group_slices)), 0.5))[0]
        times = {False: [], True: []}
        losses = {}
        for _ in range(args.rounds):
            for setting in times:
                moprune.train.CPU_CHANNELS_LAST = setting
                candidate = space.materialize(half)
                start = time.process_time()
                losses[setting] = moprune.train.fit(candidate, train, max_steps=100, lr=0.01, progress=False,
                                                    generator=torch.Generator().manual_seed(0), device="cpu")
                times[setting].append(time.process_time() - start)
        moprune.train.CPU_CHANNELS_LAST = True
        slow, fast = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name:14s} {slow:13.3f} {fast:16.3f} {slow / fast:8.2f}x {losses[False]:.5f} {losses[True]:.5f}",
              flush=True)


if __name__ == "__main__":
    main()
