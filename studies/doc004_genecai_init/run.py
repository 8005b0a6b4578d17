"""Document 004 (GeneCAI): directed vs random initialisation on vgg_small and resnet8 (MNIST), no retraining.

GeneCAI encodes structured pruning as one keep ratio per layer, ranks the channels of a layer by
the sum of ``|activation * d loss / d activation|`` (Taylor importance), scores a candidate by
its eq. 9 (``exp(FLOPs saved) / accuracy penalty``, the penalty steep below ``acc_thr``), and runs
a GA with fitness-proportionate selection, pairing of the fittest with the farthest,
per-gene swap crossover and a diversity-guided mutation (``P_mutate`` raised when the diversity
of the crossed population falls under half the initial one). Its first population comes from a
"directed initialisation": a bisection per layer finds the largest pruning rate ``theta[i]``
that keeps the accuracy above ``acc_thr`` with every other layer intact, then each gene's
pruning rate is drawn from ``N(theta/2, theta/2)`` clipped to ``[0, theta]``. Its figure 9a
(VGG on CIFAR-10) claims that a naive random initialisation "greatly harms the convergence rate
and final FLOPs".

Here: ``moprune.search(problem, "genecai", initialization="directed" | "random")`` on
``ChannelSpace(encoding="ratio", importance="taylor")`` over every prunable layer group of the
cached ``vgg_small`` and ``resnet8`` MNIST baselines (6 genes each), objectives (error, MACs),
``acc_thr`` = base validation accuracy minus 2 points (moprune's default), the paper's
``P_cross`` 0.8, ``P_swap`` 0.2, ``P_tweak`` 0.05, 6 bisection steps per layer. The bisection's
candidates count in the directed runs' budget. ``"random"`` is moprune's naive initialisation
(``theta = 1`` for every layer, no bisection). Every candidate is scored on a fixed subset of the
validation split with its BatchNorm statistics re-estimated on a fixed subset of the training
split (no weight is trained); one evaluator (and so one cache) per model serves its six runs.
The test split is used only for the last table: the smallest model within 2 validation points
of seed 0 of each initialisation.

Run from the repository root (the baselines must be cached or they are trained first):

    .venv/bin/python studies/doc004_genecai_init/run.py

It writes ``candidates.csv``, ``per_seed.csv``, ``summary.csv``, ``compare.csv``,
``fronts.csv``, ``test.csv``, ``convergence.png``, ``fronts.png`` and ``record.json`` next to
this file and prints the tables.
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
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import save_figure, write_csv, write_record  # noqa: E402

import moprune  # noqa: E402
from moprune.plotting import plot_convergence  # noqa: E402
from moprune.results import hypervolume_curve  # noqa: E402
from moprune.train import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OBJECTIVES = ("error", "macs")
INITS = ("directed", "random")
FRACTIONS = (0.25, 0.5, 1.0)
REGION_POINTS = 10.0
"""The "region" hypervolume: errors within this many points of the base (benchmarks/bench_peers.py)."""


def region_ref(base_accuracy):
    """Reference point of the region hypervolume: (base error + 10 points, MACs ratio 1)."""
    return (1.0 - base_accuracy + REGION_POINTS / 100.0, 1.0)


def smallest_within(frame, points):
    """Smallest MACs ratio among successfully evaluated candidates within ``points`` of the base."""
    ok = frame[np.isfinite(frame["accuracy"]) & (frame["accuracy_drop"] <= points + 1e-9)]
    return float(ok["macs_ratio"].min()) if len(ok) else np.nan


def evals_to_fraction(curve, target):
    """First evaluation count whose hypervolume reaches ``target`` (``nan`` if never)."""
    hit = curve[curve["hv"] >= target - 1e-12]
    return int(hit["n_evals"].iloc[0]) if len(hit) else np.nan


def run_rows(model_name, init, seed, frame, base_accuracy):
    """Per-run numbers: HV (box, region) at 25/50/100% of the run, evals to 95%, smallest MACs."""
    n = len(frame)
    full = np.arange(1, n + 1)
    curves = {"box": hypervolume_curve(frame, grid=full, objectives=OBJECTIVES),
              "region": hypervolume_curve(frame, grid=full, objectives=OBJECTIVES,
                                          ref_point=region_ref(base_accuracy))}
    row = {"model": model_name, "init": init, "seed": seed, "evaluations": n,
           "evaluated": int((~frame["cached"]).sum())}
    for measure, curve in curves.items():
        hv = curve.set_index("n_evals")["hv"]
        for frac in FRACTIONS:
            row[f"hv_{measure}_{int(100 * frac)}"] = float(hv.loc[max(1, int(round(frac * n)))])
        row[f"evals_to_95_{measure}"] = evals_to_fraction(curve, 0.95 * float(hv.iloc[-1]))
    for points in (1.0, 2.0):
        row[f"macs_within_{points:g}"] = smallest_within(frame, points)
    row["seconds"] = round(float(frame.attrs.get("run_seconds", np.nan)), 1)
    return row, curves


def common_target_evals(curves_by_run, per_seed, measure):
    """Evaluations for each run to reach 95% of the mean final HV of all runs of its model."""
    out = []
    for (model_name, init, seed), curves in curves_by_run.items():
        finals = per_seed.loc[per_seed["model"] == model_name, f"hv_{measure}_100"]
        out.append(evals_to_fraction(curves[measure], 0.95 * float(finals.mean())))
    return out


def best_so_far(frame, points):
    """Smallest MACs ratio within ``points`` of the base among the first k candidates, k = 1..n (fig. 9a)."""
    ok = np.isfinite(frame["accuracy"].to_numpy()) & (frame["accuracy_drop"].to_numpy() <= points + 1e-9)
    macs = np.where(ok, frame["macs_ratio"].to_numpy(), np.inf)
    out = np.minimum.accumulate(macs)
    return np.where(np.isfinite(out), out, np.nan)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg_small", "resnet8"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evals", type=int, default=160, help="candidates per run (bisection included)")
    parser.add_argument("--pop-size", type=int, default=16, help="N")
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--train-samples", type=int, default=500, help="training images for BN re-estimation")
    parser.add_argument("--bn-batches", type=int, default=2, help="batches of 250 for BN re-estimation")
    parser.add_argument("--importance-batches", type=int, default=4, help="training batches of 128 for Taylor")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = moprune.load_mnist()
    frames, curves_by_run, rows, tests, bases = [], {}, [], [], {}
    runs = {}
    for model_name in args.models:
        t0 = time.perf_counter()
        model = moprune.pretrained(model_name, data=splits, progress=False)
        base_test = evaluate(model, splits.test)
        space = moprune.ChannelSpace(model, encoding="ratio", importance="taylor", importance_data=splits.train,
                                     importance_batches=args.importance_batches)
        evaluator = moprune.Evaluator(splits.val, n_samples=args.val_samples, train_data=splits.train,
                                      n_train_samples=args.train_samples, bn_batches=args.bn_batches,
                                      num_threads=args.threads, finetune=None)
        print(f"{model_name}: baseline and Taylor ranking in {time.perf_counter() - t0:.0f} s, test "
              f"{100 * base_test:.2f}%, groups {space.group_names}", flush=True)
        for init in INITS:
            runs[(model_name, init)] = []
            for seed in range(args.seeds):
                problem = moprune.PruningProblem(space, evaluator, objectives=OBJECTIVES)
                t0 = time.perf_counter()
                result = moprune.search(problem, "genecai", initialization=init, n_evals=args.evals,
                                        pop_size=args.pop_size, seed=seed)
                seconds = time.perf_counter() - t0
                algorithm = getattr(result.pymoo_result, "algorithm", None)
                theta = getattr(algorithm, "theta", None)
                frame = moprune.to_frame(result)
                frame.attrs["run_seconds"] = seconds
                runs[(model_name, init)].append(frame)
                bases[model_name] = {"base_val_accuracy": result.base_accuracy, "base_test_accuracy": base_test,
                                     "base_macs": result.base_macs, "base_params": result.base_params}
                row, curves = run_rows(model_name, init, seed, frame, result.base_accuracy)
                row["boundary_evals"] = int(getattr(algorithm, "boundary_evals", 0) or 0)
                row["theta"] = None if theta is None else " ".join(f"{t:.3f}" for t in theta)
                rows.append(row)
                curves_by_run[(model_name, init, seed)] = curves
                keep = [c for c in frame.columns if c.startswith("kept/")]
                out = frame[["generation", "accuracy", "accuracy_drop", "macs_ratio", "params_ratio", *keep,
                             "cached", "seconds"]].copy()
                out.insert(0, "eval", np.arange(len(out)))
                out.insert(0, "seed", seed)
                out.insert(0, "init", init)
                out.insert(0, "model", model_name)
                frames.append(out)
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                if seed == 0:
                    within = frame[np.isfinite(frame["accuracy"]) & (frame["accuracy_drop"] <= 2.0 + 1e-9)]
                    best = within.loc[within["macs_ratio"].idxmin()]
                    pruned = space.materialize(best["genome"])
                    evaluator._recalibrate_bn(pruned)  # the statistics the search measured it with
                    test_acc = evaluate(pruned, splits.test)
                    tests.append({"model": model_name, "init": init, "seed": seed, "eval": int(best.name),
                                  "macs_ratio": best["macs_ratio"], "params_ratio": best["params_ratio"],
                                  "val_accuracy": best["accuracy"], "val_drop_points": best["accuracy_drop"],
                                  "test_accuracy": test_acc, "base_test_accuracy": base_test,
                                  "test_drop_points": 100 * (base_test - test_acc),
                                  "kept_channels": "/".join(str(int(best[c])) for c in keep),
                                  "group_sizes": "/".join(str(int(s)) for s in space.group_sizes)})

    per_seed = pd.DataFrame(rows)
    for measure in ("box", "region"):
        per_seed[f"evals_to_95_common_{measure}"] = common_target_evals(curves_by_run, per_seed, measure)
    metric_columns = [c for c in per_seed.columns if c.startswith(("hv_", "evals_to", "macs_within"))] + ["seconds"]
    summary = per_seed.groupby(["model", "init"], sort=False)[metric_columns].agg(["mean", "std"])
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    summary = summary.reset_index()

    compares, fronts = [], []
    for model_name in args.models:
        base_acc = bases[model_name]["base_val_accuracy"]
        labelled = {init: runs[(model_name, init)] for init in INITS}
        for measure, ref in (("box", None), ("region", region_ref(base_acc))):
            table = moprune.compare(labelled, objectives=OBJECTIVES, n_points=args.evals // 4, ref_point=ref)
            compares.append(table.assign(model=model_name, measure=measure))
        for init in INITS:
            for seed, frame in enumerate(runs[(model_name, init)]):
                front = moprune.pareto_front(frame, objectives=OBJECTIVES)
                fronts.append(front[["accuracy", "accuracy_drop", "macs_ratio", "params_ratio", "generation"]]
                              .reset_index().assign(model=model_name, init=init, seed=seed))
    compare_df = pd.concat(compares, ignore_index=True)
    fronts_df = pd.concat(fronts, ignore_index=True)
    tests_df = pd.DataFrame(tests)
    write_csv(pd.concat(frames, ignore_index=True), os.path.join(HERE, "candidates.csv"), index=False)
    write_csv(per_seed, os.path.join(HERE, "per_seed.csv"), index=False)
    write_csv(summary, os.path.join(HERE, "summary.csv"), index=False)
    write_csv(compare_df, os.path.join(HERE, "compare.csv"), index=False)
    write_csv(fronts_df, os.path.join(HERE, "fronts.csv"), index=False)
    write_csv(tests_df, os.path.join(HERE, "test.csv"), index=False)

    # hypervolume against evaluations (box, region) and fig. 9a's quantity (smallest MACs within 2 points)
    palette = dict(zip(INITS, sns.color_palette(n_colors=len(INITS))))
    fig, axes = plt.subplots(3, len(args.models), figsize=(5.5 * len(args.models), 11), squeeze=False)
    for j, model_name in enumerate(args.models):
        for i, measure in enumerate(("box", "region")):
            ax = axes[i, j]
            plot_convergence(compare_df[(compare_df["model"] == model_name) & (compare_df["measure"] == measure)],
                             ax=ax)
            ax.set_ylabel("hypervolume, " + ("reference (1, 1)" if measure == "box"
                                             else f"within {REGION_POINTS:g} points of the base"))
            ax.set_title(f"{model_name} (MNIST), mean +- std over {args.seeds} seeds")
            ax.legend(title="initialisation")
        ax = axes[2, j]
        for init in INITS:
            curves = np.array([best_so_far(f, 2.0) for f in runs[(model_name, init)]])
            for curve in curves:
                ax.plot(np.arange(1, len(curve) + 1), 100 * curve, color=palette[init], alpha=0.3, linewidth=0.8)
            ax.plot(np.arange(1, curves.shape[1] + 1), 100 * np.nanmean(curves, axis=0), color=palette[init],
                    label=f"{init} (mean; thin: seeds)")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("smallest MACs within 2 validation points, % of base")
        ax.legend()
    fig.suptitle("GeneCAI (document 004): directed vs random initialisation, no retraining")
    fig.tight_layout()
    save_figure(fig, os.path.join(HERE, "convergence.png"))
    plt.close(fig)

    fig, axes = plt.subplots(1, len(args.models), figsize=(6 * len(args.models), 4.5), squeeze=False)
    for j, model_name in enumerate(args.models):
        ax = axes[0, j]
        base_acc = bases[model_name]["base_val_accuracy"]
        for init in INITS:
            for seed in range(args.seeds):
                f = fronts_df[(fronts_df["model"] == model_name) & (fronts_df["init"] == init)
                              & (fronts_df["seed"] == seed)].sort_values("macs_ratio")
                ax.step(100 * f["macs_ratio"], 100 * f["accuracy"], where="post", color=palette[init],
                        linestyle=("-", "--", ":")[seed % 3], label=f"{init}, seed {seed}")
        ax.axhline(100 * base_acc, color="black", linewidth=0.8, label="base")
        for points in (1, 2):
            ax.axhline(100 * base_acc - points, color="grey", linestyle=":", linewidth=0.8)
        ax.set_ylim(100 * base_acc - 10, 100 * base_acc + 0.5)
        ax.set_xlabel("MACs, % of the base")
        ax.set_ylabel(f"validation accuracy, % ({args.val_samples} images)")
        ax.set_title(f"{model_name}: final fronts after {args.evals} evaluations")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, os.path.join(HERE, "fronts.png"))
    plt.close(fig)

    record = write_record(HERE, wall_s=time.perf_counter() - start, extra={
        "evals_per_run": args.evals, "pop_size": args.pop_size, "seeds": args.seeds,
        "val_samples": args.val_samples, "train_samples": args.train_samples, "bn_batches": args.bn_batches,
        "bases": {k: {a: round(float(b), 4) for a, b in v.items()} for k, v in bases.items()}})
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 60)
    print(per_seed.round(4).to_string(index=False))
    print(summary.round(4).to_string(index=False))
    print(tests_df.round(4).to_string(index=False))
    print(f"wall time {record['wall_s']:.0f} s; {record['command']}")


if __name__ == "__main__":
    main()
