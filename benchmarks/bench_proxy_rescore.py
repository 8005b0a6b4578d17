"""Rescore the retrained candidates of a ``bench_proxy.py --levels`` run with other fine-tuning proxies.

``bench_proxy.py`` retrains every candidate (the expensive part) and writes them to a CSV with
their per-group keep ratios and retrained validation accuracy. This rebuilds the same genomes
from those ratios (L1-ranked channels, as the space keeps them) and scores them again with the
fine-tuning settings given by ``--finetune`` (``steps=20,lr=0.05``: the keys of
``Evaluator(finetune={...})``), each under several evaluator seeds (the fine-tuning batches and
the training subset change with the seed), so that differences between proxies can be told from
seed noise. It reports, per setting and seed, Spearman's rank correlation with the retrained
accuracy within each MACs level (averaged), and the retrained accuracy of each level's pick;
the parameter count is reported as a proxy of its own (no fine-tuning, no cost).

The genomes are rebuilt from the keep ratios on the *cached* baseline: run it where the CSV was
made (the same ``pretrained`` weights), or read the correlations as between allocations, since
another baseline ranks other channels first at the same ratios.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_proxy_rescore.py --model resnet8 --data fashion-mnist \\
        --csv benchmarks/results/bench_proxy_resnet8_fashion_race.csv \\
        --finetune steps=20 steps=20,lr=0.05 --seeds 0 1 2 --out benchmarks/results/bench_proxy_rescore_resnet8.txt
"""

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch

import moprune
from moprune.cli.config import parse_option


def finetune_spec(text):
    """``steps=20,lr=0.05`` -> ``{"steps": 20, "lr": 0.05}`` (values read as the CLI's ``--option`` reads them)."""
    spec = {}
    for item in text.split(","):
        key, value = parse_option(item)
        spec[key] = value
    return spec


def within_levels(frame, column):
    """Mean Spearman correlation with ``retrained`` within each level, and each level's pick, retrained."""
    rhos, picks = [], []
    for _, group in frame.groupby("level"):
        rhos.append(float(group[column].corr(group["retrained"], method="spearman")))
        picks.append(float(group.loc[group[column].idxmax(), "retrained"]))
    return float(np.nanmean(rhos)), picks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--data", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--csv", nargs="+", required=True, help="bench_proxy CSVs (levels mode)")
    parser.add_argument("--finetune", nargs="+", type=finetune_spec, default=[{"steps": 20}],
                        help="fine-tuning settings, e.g. steps=20 steps=20,lr=0.05")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="evaluator seeds")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start_all = time.perf_counter()

    frame = pd.concat([pd.read_csv(path) for path in args.csv], ignore_index=True)
    splits = moprune.load_mnist() if args.data == "mnist" else moprune.load_fashion_mnist()
    space = moprune.ChannelSpace(moprune.pretrained(args.model, data=args.data, progress=False))
    ratios = np.array([[float(x) for x in text.split()] for text in frame["group_ratios"]])
    sizes = np.array(space.group_sizes, dtype=np.float64)
    ratios = np.round(ratios * sizes) / sizes  # the CSV rounds ratios to 3 decimals: back to whole channels
    genomes = space.genomes_from_ratios(ratios)
    cost = space.cost(genomes)
    if not np.allclose(cost["macs_ratio"], frame["macs_ratio"], rtol=1e-3):
        raise SystemExit("the rebuilt genomes do not have the CSV's MACs: another model, data or space?")
    frame["params"] = cost["params_ratio"]

    lines = [f"# bench_proxy_rescore {args}",
             f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, moprune "
             f"{moprune.__version__}, {time.strftime('%Y-%m-%d %H:%M')}",
             f"{len(frame)} retrained candidates of {args.model} ({args.data}) at MACs levels "
             f"{', '.join(f'{100 * x:g}%' for x in sorted(frame['level'].unique()))}", "",
             f"{'proxy':28s} {'seed':>4s} {'Spearman in a level':>20s} {'pick retrained %':>17s} {'s per candidate':>16s}"]
    rho, picks = within_levels(frame, "params")
    lines.append(f"{'params (no fine-tuning)':28s} {'-':>4s} {rho:20.3f} {100 * np.mean(picks):17.2f} {0:16.2f}")
    print(lines[-1], flush=True)
    summary = []
    for spec in args.finetune:
        name = ",".join(f"{k}={v}" for k, v in spec.items())
        rhos = []
        for seed in args.seeds:
            evaluator = moprune.Evaluator(splits.val, n_samples=args.samples, train_data=splits.train,
                                          n_train_samples=5000, seed=seed, num_threads=args.threads, finetune=spec)
            start = time.perf_counter()
            frame["proxy"] = [r.accuracy for r in evaluator.evaluate(space, genomes)]
            seconds = (time.perf_counter() - start) / len(frame)
            rho, picks = within_levels(frame, "proxy")
            rhos.append(rho)
            lines.append(f"{name:28s} {seed:4d} {rho:20.3f} {100 * np.mean(picks):17.2f} {seconds:16.2f}")
            print(lines[-1], flush=True)
        summary.append(f"{name:28s} mean {np.mean(rhos):.3f}, range {min(rhos):.3f}-{max(rhos):.3f} over seeds "
                       f"{args.seeds}")
    lines += ["", "Spearman within a level, over the evaluator seeds:", *summary,
              f"wall {time.perf_counter() - start_all:.0f} s"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
