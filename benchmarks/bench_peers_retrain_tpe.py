"""Optuna TPE's picks after the same retraining as ``bench_peers.py --retrain`` (ratio space, seed 0).

``bench_peers.py`` retrains the default search's pick and the uniform model; this adds Optuna TPE's
most accurate candidate under each MACs target, retrained the same way (1 epoch, lr 0.01, seed 0),
test split.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_peers_retrain_tpe.py > benchmarks/results/bench_peers_retrain_tpe.txt
"""

import os
import sys

import numpy as np

import moprune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_peers  # noqa: E402


def main():
    splits = moprune.load_mnist()
    model, space, make_problem = bench_peers.build("mnist_cnn", "ratio", splits, 1000, 1)
    run = bench_peers.run_method("optuna-tpe", make_problem, space, 300, 0, "ratio", 25)
    for target in (0.10, 0.05):
        cands = [e for e in run["archive"] if np.isfinite(e.accuracy) and e.macs_ratio <= target]
        pick = max(cands, key=lambda e: (e.accuracy, -e.macs_ratio))
        done = moprune.retrain((space, pick.genome), data=splits, base_model=model, epochs=1, lr=0.01, seed=0)
        print(f"optuna-tpe target {target}: MACs {100 * pick.macs_ratio:.2f}%, search validation "
              f"{100 * pick.accuracy:.1f}%, test after retraining {100 * done.test_accuracy:.2f}%", flush=True)


if __name__ == "__main__":
    main()
