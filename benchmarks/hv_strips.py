"""Where a region hypervolume comes from: its share per strip of accuracy drop, from a points file.

``bench_peers.py --out P`` writes every candidate's (error, MACs ratio) to ``P_points.csv.gz``.
The region hypervolume (reference (base error + 0.10, 1), normalised) is the integral over the
error ``e`` of ``1 - (smallest MACs with error <= e)``; this splits it into strips of drop below
the base (negative: better than the base on the validation subset) and prints each method's
shares, with the fraction of its candidates above 20% of the MACs.

    .venv/bin/python benchmarks/hv_strips.py benchmarks/results/bench_peers_mnist_cnn_1000_points.csv.gz --seed 0
"""

import argparse

import numpy as np
import pandas as pd

STRIPS = [(-100.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 5.0), (5.0, 10.0)]
"""Strips of accuracy drop in points (from, to)."""


def strip_shares(points: np.ndarray, base_error: float, steps: int = 20000) -> list:
    """Region hypervolume of ``points`` (error, MACs ratio) split over :data:`STRIPS`."""
    ref = base_error + 0.10
    errors = np.linspace(0.0, ref, steps + 1)[:-1]
    order = np.argsort(points[:, 0])
    sorted_errors = points[order, 0]
    running_min = np.minimum.accumulate(points[order, 1])
    k = np.searchsorted(sorted_errors, errors + 1e-12, side="right")  # candidates with error <= e
    smallest = np.where(k > 0, running_min[np.maximum(k - 1, 0)], 1.0)
    share = (1.0 - smallest) * (errors[1] - errors[0]) / ref
    drops = 100.0 * (errors - base_error)
    return [float(share[(drops >= lo) & (drops < hi)].sum()) for lo, hi in STRIPS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("points", help="a P_points.csv.gz written by bench_peers.py --out P")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frame = pd.read_csv(args.points)
    frame = frame[frame["seed"] == args.seed]
    rows = []
    for (model, method), run in frame.groupby(["model", "method"], sort=False):
        P = run[["error", "macs_ratio"]].to_numpy(dtype=float)
        shares = strip_shares(P, 1.0 - float(run["base_accuracy"].iloc[0]))
        rows.append({"model": model, "method": method, "hv_region": sum(shares),
                     **{f"drop {lo:g}..{hi:g}" if lo > -100 else "better than base": v
                        for (lo, hi), v in zip(STRIPS, shares)},
                     "share over 20% MACs": float((P[:, 1] > 0.2).mean())})
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
