"""Which search-time accuracy ranks candidates the way retraining will?

The search ranks candidates by an accuracy measured before any retraining (a proxy); the user
ends with the accuracy after retraining. This measures each proxy on the same validation subset,
retrains every candidate with the same budget (``--epochs`` on the training split) and reports
Spearman's rank correlation between each proxy and the retrained accuracy on the full validation
split, with the seconds each proxy costs per candidate.

Two ways to choose the candidates:

- default: from the region users pick from (a default search on ``mnist_cnn``'s channels; those
  within ``--band`` points of the base, spread over log-MACs). Size dominates this ranking.
- ``--levels 0.05 0.15 ...``: ``--per-level`` candidates at each MACs level, all of (nearly) the
  same MACs: the uniform keep ratio and per-layer ratios drawn at random around it, rescaled to
  the level. What matters to a search at a fixed budget is whether the proxy finds, among models
  of equal size, the one that retrains best: this reports the Spearman correlation within each
  level (averaged), and the retrained accuracy of each proxy's pick per level against the
  uniform model's and the best one's. ``--channel-draws K`` adds K models per level with the
  uniform model's channel counts but randomly chosen channels (binary encoding). After the
  tables, the allocation an oracle would pick (best retrained validation accuracy) is set
  against the uniform one on the test split: a ceiling for any search over this space.

Proxies: no fine-tuning (BatchNorm statistics re-estimated on training images where the model
has BatchNorm); ``--steps`` SGD fine-tuning steps in the loop (document 000); ``--retrain-steps``
short retrainings (the full recipe, cut to that many steps with the cosine schedule spanning
them, measured on the full validation split): what a retraining race would rank by.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_proxy.py --candidates 16 --out benchmarks/results/bench_proxy.txt
    .venv/bin/python benchmarks/bench_proxy.py --model resnet8 --data fashion-mnist --levels 0.05 0.15 \\
        --per-level 6 --steps 20 100 --out benchmarks/results/bench_proxy_resnet8_fashion.txt
    .venv/bin/python benchmarks/bench_proxy.py --model resnet8 --data fashion-mnist --levels 0.035 0.07 0.15 \\
        --per-level 8 --steps 20 --retrain-steps 100 200 --epochs 2 --lr 0.01 --threads 2 \\
        --out benchmarks/results/bench_proxy_resnet8_fashion_race.txt
    .venv/bin/python benchmarks/bench_proxy.py --model resnet8 --data fashion-mnist --levels 0.035 0.07 0.15 \\
        --per-level 1 --tilts 0.15 0.3 0.5 --steps --epochs 2 --lr 0.01 --threads 2 \\
        --out benchmarks/results/bench_proxy_resnet8_fashion_tilt.txt
    .venv/bin/python benchmarks/bench_proxy.py --model mnist_cnn --encoding ratio --levels 0.0422 0.0883 \\
        --per-level 24 --sigma 0.7 --tilts 0.15 0.3 0.5 --steps --epochs 1 --lr 0.01 --threads 2 \\
        --out benchmarks/results/bench_proxy_mnist_cnn_allocation_ceiling.txt
    .venv/bin/python benchmarks/bench_proxy.py --model mnist_cnn --encoding binary --levels 0.0422 \\
        --per-level 1 --channel-draws 10 --steps --epochs 1 --lr 0.01 --threads 2 \\
        --out benchmarks/results/bench_proxy_mnist_cnn_channel_choice.txt
"""

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch

import moprune
from moprune.models.baselines import baseline_recipe
from moprune.operators.pruning import tilted_allocation
from moprune.retraining import front_points


def spearman(a, b):
    """Spearman's rank correlation (average ranks for ties), through pandas."""
    return float(pd.Series(a).corr(pd.Series(b), method="spearman"))


def at_macs(space, relative, target, iterations=40):
    """The genome keeping ``c * relative`` of each group (clipped to [0.01, 1]) whose MACs ratio is nearest ``target``."""
    low, high = 0.0, 1.0 / max(float(np.min(relative)), 1e-6)
    best, best_gap = None, np.inf
    for _ in range(iterations):  # MACs grow with c: bisect it
        c = (low + high) / 2
        genome = space.genomes_from_ratios(np.clip(c * relative, 0.01, 1.0)[None, :])[0]
        macs = float(space.cost(genome[None, :])["macs_ratio"][0])
        if abs(np.log(macs / target)) < best_gap:
            best, best_gap = genome, abs(np.log(macs / target))
        low, high = (c, high) if macs < target else (low, c)
    return best


def random_channels(space, genome, rng):
    """``genome`` with the same number of channels kept in each group, the kept ones drawn at random (binary only)."""
    other = genome.copy()
    for sl in space.group_slices:
        other[sl] = rng.permutation(genome[sl])
    return other


def matched_candidates(space, levels, per_level, rng, sigma, tilts=(), channel_draws=0):
    """At each MACs level: the uniform ratio, the ``tilts`` (parameter-tilted allocations), then random ones.

    ``per_level`` counts the uniform and the random candidates; ``channel_draws`` more per level
    keep the uniform model's channel counts with the kept channels drawn at random instead of the
    largest L1 norms (binary encoding), to tell how much the choice of channels matters.
    """
    genomes, level_of, kinds = [], [], []
    n_groups = len(space.group_slices)
    for level in levels:
        for k in range(per_level):
            relative = np.ones(n_groups) if k == 0 else np.exp(rng.normal(0.0, sigma, n_groups))
            genomes.append(at_macs(space, relative, level))
            level_of.append(level)
            kinds.append("uniform" if k == 0 else "random")
            if k == 0:
                for tilt in tilts:
                    genomes.append(tilted_allocation(space, level, tilt))
                    level_of.append(level)
                    kinds.append(f"tilt {tilt:g}")
                uniform = genomes[-1 - len(tilts)]
                for _ in range(channel_draws):
                    genomes.append(random_channels(space, uniform, rng))
                    level_of.append(level)
                    kinds.append("random channels")
    frame = pd.DataFrame({"level": level_of, "kind": kinds})
    frame["uniform"] = frame["kind"] == "uniform"
    frame["genome"] = genomes
    frame["macs_ratio"] = space.cost(np.stack(genomes))["macs_ratio"]
    return frame


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--encoding", default="binary", choices=["binary", "ratio"])
    parser.add_argument("--candidates", type=int, default=24, help="default mode: candidates from the band")
    parser.add_argument("--band", type=float, default=5.0)
    parser.add_argument("--levels", nargs="+", type=float, default=None, help="MACs levels of the matched mode")
    parser.add_argument("--per-level", type=int, default=6)
    parser.add_argument("--sigma", type=float, default=0.5, help="spread of the log keep ratios around uniform")
    parser.add_argument("--steps", nargs="*", type=int, default=[10, 50])
    parser.add_argument("--tilts", nargs="*", type=float, default=[],
                        help="matched mode: parameter-tilted allocations (moprune.operators.pruning.tilted_allocation)")
    parser.add_argument("--channel-draws", type=int, default=0,
                        help="matched mode, binary encoding: the uniform model's channel counts with random channels")
    parser.add_argument("--retrain-steps", nargs="*", type=int, default=[], help="short-retraining proxies")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.05, help="retraining learning rate (cosine decay)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--evals", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", default="recipe", choices=["recipe", "none"],
                        help="retraining augmentation: the baseline recipe's (Fashion-MNIST: flip+crop) or none "
                             "(as moprune.retrain and bench_peers.py retrain by default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.channel_draws and args.encoding != "binary":
        parser.error(f"--channel-draws needs --encoding binary (one bit per channel), got --encoding {args.encoding}")
    torch.set_num_threads(args.threads)
    start_all = time.perf_counter()

    splits = moprune.load_mnist() if args.data == "mnist" else moprune.load_fashion_mnist()
    model = moprune.pretrained(args.model, data=args.data, progress=False)
    augment = baseline_recipe(args.model, args.data).get("augment") if args.augment == "recipe" else None
    space = moprune.ChannelSpace(model, encoding=args.encoding)
    options = dict(n_samples=args.samples, num_threads=args.threads, train_data=splits.train, n_train_samples=5000,
                   seed=args.seed)
    if args.levels:
        chosen = matched_candidates(space, args.levels, args.per_level, np.random.default_rng(args.seed),
                                    args.sigma, args.tilts, args.channel_draws)
        where = (f"{args.per_level + len(args.tilts) + args.channel_draws} candidates at each MACs level "
                 f"{', '.join(f'{100 * x:g}%' for x in args.levels)} (uniform, tilts {args.tilts}, "
                 f"{args.channel_draws} random channel draws, random per-layer ratios)")
    else:
        problem = moprune.PruningProblem(space, moprune.Evaluator(splits.val, **options, finetune=None))
        frame = moprune.to_frame(moprune.search(problem, n_evals=args.evals, seed=args.seed))
        region = frame[(frame["accuracy_drop"] <= args.band) & frame["error_message"].isna()]
        region = region[~region["plan_key"].duplicated()]
        chosen = front_points(region, args.candidates)  # spread over log-MACs, not only the front
        where = f"{len(chosen)} candidates within {args.band} points of the base"
    print(f"{where}, MACs {100 * chosen['macs_ratio'].min():.1f}%-{100 * chosen['macs_ratio'].max():.1f}%",
          flush=True)

    genomes = np.stack(chosen["genome"].to_list())
    proxies = {}
    for steps in [0, *args.steps]:
        extra = {"finetune": steps or None}
        evaluator = moprune.Evaluator(splits.val, **options, **extra)
        start = time.perf_counter()
        records = evaluator.evaluate(space, genomes)
        name = f"{steps} fine-tuning steps" if steps else "no fine-tuning"
        proxies[name] = (np.array([r.accuracy for r in records]), (time.perf_counter() - start) / len(records))
        print(f"{name}: {proxies[name][1]:.2f} s per candidate", flush=True)
    for steps in args.retrain_steps:
        start, values = time.perf_counter(), []
        for genome in chosen["genome"]:
            values.append(moprune.retrain((space, genome), data=splits, base_model=model, epochs=args.epochs,
                                          max_steps=steps, lr=args.lr, seed=args.seed, augment=augment).val_accuracy)
        name = f"retrain {steps} steps"
        proxies[name] = (np.array(values), (time.perf_counter() - start) / len(values))
        print(f"{name}: {proxies[name][1]:.2f} s per candidate", flush=True)
    retrained, retrained_test = [], []
    for genome in chosen["genome"]:
        done = moprune.retrain((space, genome), data=splits, base_model=model, epochs=args.epochs, lr=args.lr,
                               seed=args.seed, augment=augment)
        retrained.append(done.val_accuracy)
        retrained_test.append(done.test_accuracy)
    chosen["retrained"] = retrained = np.array(retrained)
    chosen["retrained_test"] = np.array(retrained_test)  # reported only for the final pick of each level

    lines = [f"# bench_proxy {args}", f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"moprune {moprune.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"wall {time.perf_counter() - start_all:.0f} s",
             f"{where} of {args.model} ({args.encoding} channels, {args.data}), "
             f"MACs {100 * chosen['macs_ratio'].min():.1f}%-{100 * chosen['macs_ratio'].max():.1f}%; "
             f"retrained {args.epochs} epoch(s) each (lr {args.lr}, augment {augment}), validation accuracy after "
             f"retraining {100 * retrained.min():.2f}%-{100 * retrained.max():.2f}%", ""]
    if args.levels:
        lines.append(f"{'proxy':24s} {'Spearman in a level':>20s} {'pick retrained %':>17s} "
                     f"{'s per candidate':>16s}   (per level: proxy's pick / uniform / best, retrained val %)")
        for name, (values, seconds) in proxies.items():
            chosen[name] = values
            within, picks, detail = [], [], []
            for level, group in chosen.groupby("level"):
                within.append(spearman(group[name], group["retrained"]))
                pick = group.loc[group[name].idxmax(), "retrained"]
                picks.append(pick)
                uniform = group.loc[group["uniform"], "retrained"].iloc[0]
                detail.append(f"{100 * level:g}%: {100 * pick:.2f}/{100 * uniform:.2f}/{100 * group['retrained'].max():.2f}")
            lines.append(f"{name:24s} {np.nanmean(within):20.3f} {100 * np.mean(picks):17.2f} {seconds:16.3f}   "
                         + "; ".join(detail))
        if args.tilts or args.channel_draws:  # what each kind of allocation retrains to, level by level
            lines += ["", "retrained validation % by allocation (per level; random: best / mean of them)"]
            for kind, group in chosen.groupby("kind", sort=False):
                per = group.groupby("level")["retrained"]
                cells = [f"{100 * lv:g}%: {100 * per.max()[lv]:.2f}" + (f"/{100 * per.mean()[lv]:.2f}"
                                                                         if kind.startswith("random") else "")
                         for lv in per.max().index]
                gain = (group.groupby("level")["retrained"].mean()
                        - chosen[chosen["uniform"]].set_index("level")["retrained"]).mean()
                lines.append(f"{kind:10s} " + "; ".join(cells) + f"   mean gain over uniform {100 * gain:+.2f} points")
        lines += ["", "the allocation chosen by retrained validation accuracy (an oracle that retrains every candidate) "
                  "against the uniform one, test split: among all the level's models, then among those with at "
                  "most the uniform model's MACs"]
        for level, group in chosen.groupby("level"):
            uniform = group[group["uniform"]].iloc[0]
            for where, pool in (("any MACs", group), ("at or below uniform", group[group["macs_ratio"] <= uniform["macs_ratio"]])):
                best = pool.loc[pool["retrained"].idxmax()]
                lines.append(f"{100 * level:g}%, {where}: best {best['kind']} at {100 * best['macs_ratio']:.2f}% MACs "
                             f"(ratios {' '.join(f'{r:.2f}' for r in space.group_ratios(best['genome'][None, :])[0])}): "
                             f"test {100 * best['retrained_test']:.2f}%; uniform at {100 * uniform['macs_ratio']:.2f}%: "
                             f"test {100 * uniform['retrained_test']:.2f}%; gain "
                             f"{100 * (best['retrained_test'] - uniform['retrained_test']):+.2f} points")
    else:
        lines.append(f"{'proxy':28s} {'Spearman vs retrained':>22s} {'s per candidate':>16s}")
        for name, (values, seconds) in proxies.items():
            lines.append(f"{name:28s} {spearman(values, retrained):22.3f} {seconds:16.3f}")
        lines.append(f"{'MACs alone':28s} {spearman(chosen['macs_ratio'].to_numpy(), retrained):22.3f} {0:16.3f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.out + ".tmp", args.out)
        table = chosen.drop(columns=["genome"]).assign(  # every candidate, with its per-group keep ratios
            group_ratios=[" ".join(f"{r:.3f}" for r in space.group_ratios(g[None, :])[0]) for g in chosen["genome"]])
        csv = os.path.splitext(args.out)[0] + ".csv"
        table.to_csv(csv + ".tmp", index=False)
        os.replace(csv + ".tmp", csv)


if __name__ == "__main__":
    main()
