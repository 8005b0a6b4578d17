"""Retraining-only probe: the kept counts the first run's searches found, as L1-ranked channels, retrained as run.py does.

Run from the repository root (trains and caches the 20-epoch baseline first if it is not cached):

    .venv/bin/python studies/doc001_two_step/probe_retrain.py

Prints one line per structure: params, MACs, validation and test accuracy after 10 epochs at lr 0.02
(cosine, +-2 pixel shifts, seed 0) and the test drop against the baseline.
"""

import time

import numpy as np
import torch

import moprune
from moprune.train import evaluate

STRUCTURES = [(4, 9, 108), (4, 9, 96), (3, 12, 44)]
"""conv1-conv2-fc1 kept counts of the first run's retrained candidates (two_step's best two, focused's pick)."""


def main():
    torch.set_num_threads(1)
    splits = moprune.load_mnist()
    base = moprune.pretrained("lenet5_caffe", data=splits, progress=False, epochs=20, augment="crop")
    base_test = evaluate(base, splits.test)
    space = moprune.ChannelSpace(base, encoding="binary")
    sizes = np.array([s.stop - s.start for s in space.group_slices], dtype=float)
    print(f"base test {100 * base_test:.2f}%", flush=True)
    for kept in STRUCTURES:
        genome = space.genomes_from_ratios(np.array(kept, dtype=float) / sizes)[0]
        t0 = time.perf_counter()
        r = moprune.retrain((space, genome), data=splits, base_model=base, epochs=10, lr=0.02, seed=0, augment="crop")
        print(f"{'-'.join(map(str, kept))}: params {100 * r.params_ratio:.2f}% MACs {100 * r.macs_ratio:.2f}% "
              f"val {100 * r.val_accuracy:.2f}% test {100 * r.test_accuracy:.2f}% "
              f"drop {100 * (base_test - r.test_accuracy):.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
