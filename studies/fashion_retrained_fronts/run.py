"""Fashion-MNIST: the default search's retrained front against uniform pruning, at equal retraining.

On MNIST, uniform pruning (the same keep ratio in every layer, L1-ranked, as a plain Torch-Pruning
user does) retrained for an epoch keeps within a point of the base down to about 5% of the MACs,
which leaves no room to show what a search buys. Fashion-MNIST has wider trade-offs.

For each model (the zoo's Fashion-MNIST baselines, trained with flips and +-2 pixel shifts), and
each seed: the default search (``moprune.search(problem)``, ``"focused"``) over the default channel
space, objectives (error, MACs), every candidate scored on 1,000 validation images after the
Evaluator's default fine-tuning in the loop (``finetune="auto"``: 20 SGD steps on a 5,000-image
training subset; ``--finetune 0`` turns it off, as the first run of this study had it) and with its
BatchNorm statistics re-estimated on that subset.
Then ``retrain_front`` retrains up to ``--points`` front points (MACs within ``--min-macs`` and
``--max-macs``, spread on log-MACs; no search-time accuracy filter: without fine-tuning in the
loop, channel-pruned ``resnet8`` candidates under about 70% of the MACs are near chance before
retraining, so a filter such as "within 10 points" would leave none) and, for each of them, the uniform model with
the nearest MACs is retrained with exactly the same budget (epochs, lr with cosine decay, the same
augmentation as the baseline, the same seed). Both are measured on the full validation and test
splits; the comparison is paired at (nearly) equal MACs.

Run from the repository root (baselines not cached are trained first, 15-20 min each here):

    .venv/bin/python studies/fashion_retrained_fronts/run.py --threads 2
    .venv/bin/python studies/fashion_retrained_fronts/run.py --threads 2 --finetune 0   # the first run

It writes ``retrained.csv`` (every retrained model of both methods), ``search_fronts.csv`` (each search's
front, search-time validation-subset accuracy), ``paired.csv`` (one row per
front point: moprune against uniform at matched MACs), ``summary.csv``, ``<model>.png`` and
``record.json`` next to this file, and prints the tables.
"""

import argparse
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import save_figure, uniform_genome, write_csv, write_record  # noqa: E402

import moprune  # noqa: E402
from moprune.cli.config import parse_option  # noqa: E402
from moprune.exceptions import MopruneValueError  # noqa: E402
from moprune.models.baselines import baseline_recipe  # noqa: E402
from moprune.train import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "fashion-mnist"




def search_option(text):
    """``KEY=VALUE`` of ``--option`` (the CLI's ``--algo-option`` reading); a bad one is an argparse error."""
    try:
        return parse_option(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("--algo-option", "--option")) from None


def finetune_setting(args):
    """The Evaluator's ``finetune`` keyword from ``--finetune`` and ``--finetune-lr`` (none: its default)."""
    if args.finetune_lr is not None:
        return {"finetune": {"steps": 20 if args.finetune is None else args.finetune, "lr": args.finetune_lr}}
    return {} if args.finetune is None else {"finetune": args.finetune or None}


def run_model(name, splits, args):
    """Search, retrain the front and its uniform twins for every seed; the rows of both (and race rounds)."""
    base = moprune.pretrained(name, data=DATA, progress=False)
    augment = baseline_recipe(name, DATA).get("augment")
    space = moprune.ChannelSpace(base, encoding=args.encoding)
    base_val, base_test = evaluate(base, splits.val), evaluate(base, splits.test)
    print(f"{name}: base {100 * base_val:.2f}% validation, {100 * base_test:.2f}% test; "
          f"{space.n_var} genes ({args.encoding}), retraining augment={augment}", flush=True)
    rows, searches, fronts, races = [], [], [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        evaluator = moprune.Evaluator(splits.val, n_samples=args.val_samples, train_data=splits.train,
                                      n_train_samples=5000, seed=seed, num_threads=args.threads,
                                      **finetune_setting(args))
        problem = moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))
        t0 = time.perf_counter()
        options = {"max_macs": args.max_macs} if args.budget else {}
        options.update(args.option)  # options of the default search, e.g. max_imbalance=2
        result = moprune.search(problem, n_evals=args.evals, seed=seed, **options)
        search_s = time.perf_counter() - t0
        searches.append({"model": name, "seed": seed, "candidates": len(result.archive), "search_s": search_s})
        search_front = moprune.pareto_front(result)
        fronts.append(pd.DataFrame({"model": name, "seed": seed, "eval": search_front.index,
                                    "macs_ratio": search_front["macs_ratio"].to_numpy(),
                                    "search_accuracy": search_front["accuracy"].to_numpy()}))
        t0 = time.perf_counter()
        try:
            front = moprune.retrain_front(result, data=splits, base_model=base, n_points=args.points,
                                          epochs=args.epochs, lr=args.lr, min_macs=args.min_macs,
                                          max_macs=args.max_macs, uniform_twins=args.uniform_twins,
                                          race=args.race, seed=seed, augment=augment)
        except MopruneValueError as error:  # no front point within the filters
            print(f"  seed {seed}: nothing retrained ({error})", flush=True)
            continue
        races += [{"model": name, "seed": seed, **r} for r in front.attrs.get("race_rounds", [])]
        for eval_index, row in front.iterrows():
            rows.append({"model": name, "seed": seed, "method": "moprune", "pair": f"{seed}:{eval_index}",
                         "macs_ratio": row["macs_ratio"], "params_ratio": row["params_ratio"],
                         "search_accuracy": row["search_accuracy"], "val_accuracy": row["accuracy"],
                         "test_accuracy": row["test_accuracy"], "kept": row.get("source", "search"),
                         # with --uniform-twins: the search's own model, whichever was kept
                         "search_model_val_accuracy": row.get("search_model_accuracy", row["accuracy"]),
                         "search_model_test_accuracy": row.get("search_model_test_accuracy", row["test_accuracy"]),
                         # per-group keep ratios of the search's own model: which groups it prunes harder
                         "search_group_ratios": " ".join(f"{r:.3f}" for r in space.group_ratios(
                             np.asarray(search_front.loc[eval_index, "genome"])[None, :])[0]),
                         # with --race: where the race's winner came from, and the kept model's keep ratios
                         "finalist_source": row.get("finalist_source", "search"),
                         "kept_group_ratios": " ".join(f"{r:.3f}" for r in space.group_ratios(
                             np.asarray(row["genome"])[None, :])[0])})
            if args.uniform_twins or args.race:  # retrain_front retrained the twin already (same budget, same seed)
                twin = {"macs_ratio": row["uniform_macs_ratio"], "params_ratio": np.nan,
                        "val_accuracy": row["uniform_accuracy"], "test_accuracy": row["uniform_test_accuracy"]}
            else:
                done = moprune.retrain((space, uniform_genome(space, row["macs_ratio"])), data=splits,
                                       base_model=base, epochs=args.epochs, lr=args.lr, seed=seed, augment=augment)
                twin = {"macs_ratio": done.macs_ratio, "params_ratio": done.params_ratio,
                        "val_accuracy": done.val_accuracy, "test_accuracy": done.test_accuracy}
            rows.append({"model": name, "seed": seed, "method": "uniform", "pair": f"{seed}:{eval_index}",
                         "search_accuracy": np.nan, **twin})
            print(f"  seed {seed}: {100 * row['macs_ratio']:5.2f}% MACs -> {100 * row['test_accuracy']:.2f}% test "
                  f"({row.get('source', 'search')}); uniform {100 * twin['macs_ratio']:5.2f}% -> "
                  f"{100 * twin['test_accuracy']:.2f}%", flush=True)
        print(f"  seed {seed}: search {len(result.archive)} candidates in {search_s:.0f} s, "
              f"{len(front)} points and their uniform twins retrained in {time.perf_counter() - t0:.0f} s", flush=True)
    base_row = {"model": name, "base_val_accuracy": base_val, "base_test_accuracy": base_test}
    return rows, searches, fronts, base_row, races


def paired_table(retrained):
    """One row per front point: moprune's retrained model against its uniform twin."""
    wide = retrained.pivot_table(index=["model", "seed", "pair"], columns="method",
                                 values=["macs_ratio", "test_accuracy", "val_accuracy"]).reset_index()
    wide.columns = ["_".join(c for c in col if c) for col in wide.columns]
    wide["test_gain_points"] = 100 * (wide["test_accuracy_moprune"] - wide["test_accuracy_uniform"])
    wide["val_gain_points"] = 100 * (wide["val_accuracy_moprune"] - wide["val_accuracy_uniform"])
    own = ["kept", "search_model_test_accuracy"]
    kept = retrained[retrained["method"] == "moprune"][["model", "seed", "pair", *own]]
    wide = wide.merge(kept, on=["model", "seed", "pair"], how="left")  # which model a uniform_twins point kept
    wide["search_model_test_gain_points"] = 100 * (wide["search_model_test_accuracy"] - wide["test_accuracy_uniform"])
    return wide.sort_values(["model", "seed", "macs_ratio_moprune"])


def summary_table(paired, bases):
    """Per model and MACs band: mean test gain over uniform and how many pairs moprune wins."""
    out = []
    bands = [(0.0, 0.04), (0.04, 0.07), (0.07, 0.14), (0.14, 1.0)]
    for model, sub in paired.groupby("model"):
        base_test = bases.set_index("model").loc[model, "base_test_accuracy"]
        for low, high in bands:
            band = sub[(sub["macs_ratio_moprune"] > low) & (sub["macs_ratio_moprune"] <= high)]
            if not len(band):
                continue
            out.append({"model": model, "macs_band": f"{100 * low:g}-{100 * high:g}%", "pairs": len(band),
                        "moprune_wins": int((band["test_gain_points"] > 0).sum()),
                        "mean_macs_pct": round(100 * band["macs_ratio_moprune"].mean(), 2),
                        "moprune_test_pct": round(100 * band["test_accuracy_moprune"].mean(), 2),
                        "uniform_test_pct": round(100 * band["test_accuracy_uniform"].mean(), 2),
                        "mean_test_gain_points": round(band["test_gain_points"].mean(), 2),
                        "ties": int((band["test_gain_points"].abs() < 1e-9).sum()),
                        "search_model_gain_points": round(band["search_model_test_gain_points"].mean(), 2),
                        "base_test_pct": round(100 * base_test, 2)})
    return pd.DataFrame(out)


def plot_model(name, retrained, base_test, epochs, out):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sub = retrained[retrained["model"] == name]
    for (method, seed), group in sub.groupby(["method", "seed"]):
        group = group.sort_values("macs_ratio")
        style = "o-" if method == "moprune" else "s--"
        ax.plot(100 * group["macs_ratio"], 100 * group["test_accuracy"], style,
                label=f"{'moprune default' if method == 'moprune' else 'uniform keep ratio'}, seed {seed}")
    ax.axhline(100 * base_test, color="green", linestyle=":", label=f"base {100 * base_test:.2f}%")
    ax.set_xscale("log")
    ax.set_xlabel("MACs, % of the base (log)")
    ax.set_ylabel("test accuracy after retraining, %")
    ax.set_title(f"{name} on Fashion-MNIST: retrained {epochs} epoch(s), equal budget")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(out, f"{name}.png"))
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet8", "vgg_small"])
    parser.add_argument("--encoding", choices=["binary", "ratio"], default="binary",
                        help="channel genome (binary: ChannelSpace's default)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--evals", type=int, default=300)
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--points", type=int, default=5, help="front points retrained per seed")
    parser.add_argument("--epochs", type=int, default=2, help="retraining epochs of every model")
    parser.add_argument("--lr", type=float, default=0.01, help="retraining learning rate (cosine decay)")
    parser.add_argument("--min-macs", type=float, default=0.02, help="retrain front points from this MACs ratio")
    parser.add_argument("--max-macs", type=float, default=0.30, help="retrain front points up to this MACs ratio")
    parser.add_argument("--finetune", type=int, default=None,
                        help="SGD steps of fine-tuning in the loop (default: the Evaluator's default)")
    parser.add_argument("--finetune-lr", type=float, default=None,
                        help="learning rate of that fine-tuning (default: the Evaluator's, 0.01)")
    parser.add_argument("--budget", action="store_true",
                        help="search under a budget of --max-macs (moprune.search(..., max_macs=...)), as a user "
                             "who wants the models of this window says so")
    parser.add_argument("--uniform-twins", action="store_true",
                        help="retrain_front(..., uniform_twins=True): each point keeps the better (on validation) of "
                             "the search's model and its uniform twin")
    parser.add_argument("--race", type=int, default=0, metavar="K",
                        help="retrain_front(..., race=K): K contenders of each point's size raced by short "
                             "retrainings, the winner against the uniform twin (implies --uniform-twins)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", type=search_option,
                        help="an option of the default search (a TOML value), e.g. tilt_fraction=0 or "
                             "max_imbalance=2; repeatable")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=HERE, help="folder of the outputs (default: next to this file)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    splits = moprune.load_fashion_mnist()
    rows, searches, fronts, bases, races = [], [], [], [], []
    for name in args.models:
        model_rows, model_searches, model_fronts, base_row, model_races = run_model(name, splits, args)
        races += model_races
        rows += model_rows
        searches += model_searches
        fronts += model_fronts
        bases.append(base_row)
    retrained = pd.DataFrame(rows)
    bases = pd.DataFrame(bases)
    paired = paired_table(retrained)
    summary = summary_table(paired, bases)
    write_csv(retrained, os.path.join(args.out, "retrained.csv"), index=False)
    write_csv(paired, os.path.join(args.out, "paired.csv"), index=False)
    write_csv(summary, os.path.join(args.out, "summary.csv"), index=False)
    write_csv(pd.DataFrame(searches), os.path.join(args.out, "searches.csv"), index=False)
    write_csv(pd.concat(fronts, ignore_index=True), os.path.join(args.out, "search_fronts.csv"), index=False)
    if races:  # every short retraining of every race: which contenders survived which round
        write_csv(pd.DataFrame(races), os.path.join(args.out, "race_rounds.csv"), index=False)
    for _, base_row in bases.iterrows():
        plot_model(base_row["model"], retrained, base_row["base_test_accuracy"], args.epochs, args.out)
    record = write_record(args.out, wall_s=time.perf_counter() - start,
                          extra={"bases": bases.round(4).to_dict(orient="records")})
    pd.set_option("display.width", 200)
    print(paired.round(4).to_string(index=False))
    print(summary.to_string(index=False))
    print(f"wall time {record['wall_s']:.0f} s; {record['command']}")


if __name__ == "__main__":
    main()
