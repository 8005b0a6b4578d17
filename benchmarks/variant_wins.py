"""Variants of the default search against peers measured in another ``bench_peers.py`` run.

``bench_peers.py --methods moprune --option KEY=VALUE --out V`` runs one variant alone; this
script scores each such run against the peers (every method but ``moprune`` and ``uniform``) of
a full run on the same model, seeds and evaluations: means over seeds, and in how many seeds the
variant beats every peer (strictly: higher hypervolume, smaller MACs within 1 / 0.5 points). With
the peers' ``_points.csv.gz`` and a variant's own, it also scores them at equal time (each
peer's candidates finished within the variant's time for that seed, or the variant's within the
fastest peer's, as ``bench_peers.py`` does). Runs made with ``--heldout`` are also scored on their
held-out figures (``heldout_*``, at equal evaluations only: the points files hold subset
measurements); compare only runs whose held-out images are the same (``--images-per-seed`` and
``--heldout-exclude`` alike). ``--uniform`` counts the uniform sweep as a peer too at equal
evaluations, as ``bench_peers.py``'s own count does (at equal time it leaves it out, as that does;
unlike it, a tie on MACs within 1 point counts as no win here).

    .venv/bin/python benchmarks/variant_wins.py benchmarks/results/bench_peers_mnist_cnn_1000.csv \\
        benchmarks/results/bench_peers_mnist_cnn_1000_lossless_ceiling.csv
"""

import argparse
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_peers import metrics  # noqa: E402

COLUMNS = [("hv_box", max), ("hv_region", max), ("hv_band", max), ("macs_within_1", min), ("macs_within_0.5", min)]
"""Figures compared, and which way is better."""

HELDOUT_COLUMNS = [("heldout_hv_region", max), ("heldout_hv_band", max), ("heldout_macs_within_1", min)]
"""Held-out figures compared, where both runs have them (``bench_peers.py --heldout``)."""


def beats(mine: float, theirs: pd.Series, better) -> bool:
    """Whether ``mine`` is strictly better than every value of ``theirs`` (NaN: found none, the worst)."""
    if better is max:
        return bool(mine > theirs.fillna(-np.inf).max())
    return bool(mine < theirs.fillna(np.inf).min())


def equal_time_wins(peer_points: pd.DataFrame, own_points: pd.DataFrame) -> dict:
    """Seeds where the variant beats every peer with every run cut at the shortest run's time."""
    wins = {name: 0 for name, _ in COLUMNS}
    for seed, own in own_points.groupby("seed"):
        runs = {"variant": own, **dict(tuple(peer_points[peer_points["seed"] == seed].groupby("method")))}
        budget = min(run["time"].max() for run in runs.values())
        base = float(own["base_accuracy"].iloc[0])
        scored = {m: metrics(r[r["time"] <= budget][["error", "macs_ratio"]].to_numpy(float), base) for m, r in runs.items()}
        for name, better in COLUMNS:
            theirs = pd.Series([scored[m][name] for m in scored if m != "variant"])
            wins[name] += beats(scored["variant"][name], theirs, better)
    return wins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peers", help="a bench_peers.py CSV with the peers (its moprune row is shown too)")
    parser.add_argument("variants", nargs="+", help="bench_peers.py CSVs of single-method runs")
    parser.add_argument("--uniform", action="store_true", help="count the uniform sweep as a peer too")
    args = parser.parse_args()
    not_peers = ["moprune"] if args.uniform else ["moprune", "uniform"]
    full = pd.read_csv(args.peers)
    full = full[full["equal"] == "evals"]
    peers = full[~full["method"].isin(not_peers)]
    peer_points_path = args.peers[:-len(".csv")] + "_points.csv.gz"
    peer_points = pd.read_csv(peer_points_path) if os.path.exists(peer_points_path) else None
    if peer_points is not None:
        peer_points = peer_points[~peer_points["method"].isin(["moprune", "uniform"])]  # at equal time, as bench_peers.py
    own = full[full["method"] == "moprune"]
    runs = {f"{os.path.basename(args.peers)} (moprune)": (own, None)} if len(own) else {}  # a peers-only run has none
    for path in args.variants:
        frame = pd.read_csv(path)
        frame = frame[frame["method"] == "moprune"]  # a variant's run may hold the uniform sweep too
        own_points = path[:-len(".csv")] + "_points.csv.gz"
        points = pd.read_csv(own_points) if os.path.exists(own_points) else None
        if points is not None:
            points = points[points["method"] == "moprune"]
        runs[os.path.basename(path)] = (frame[frame["equal"] == "evals"], points)
    columns = [(c, b) for c, b in COLUMNS + HELDOUT_COLUMNS if c in peers.columns]  # older runs lack hv_band
    rows = []
    for name, (frame, points) in runs.items():
        row = {"run": name, "seeds": len(frame), "cpu_or_wall_s": round(float(frame["wall"].mean()), 1)}
        for column, better in columns:
            if column not in frame.columns:
                continue
            row[column] = round(float(frame[column].mean()), 4)
            row[f"{column} best"] = sum(beats(float(frame[frame["seed"] == s][column].iloc[0]),
                                              peers[peers["seed"] == s][column], better) for s in frame["seed"])
        if "claim_1_heldout_drop" in frame.columns:
            row["claim_1_heldout_drop"] = round(float(frame["claim_1_heldout_drop"].mean()), 4)
        if points is not None and peer_points is not None:
            for column, n in equal_time_wins(peer_points, points).items():
                row[f"{column} best (time)"] = n
        rows.append(row)
    pd.set_option("display.width", 250)
    print(pd.DataFrame(rows).set_index("run").T.to_string())


if __name__ == "__main__":
    main()
