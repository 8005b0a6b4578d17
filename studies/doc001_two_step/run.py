"""Document 001 reproduced: the two-step framework on LeNet-5-Caffe, error / computation / sparsity.

Document 001 prunes LeNet (20-50-500-10, as ``lenet5_caffe``) on MNIST with a GA that trades
error, computation and sparsity, alternating search and retraining of the elite (its two-step
framework). It reports 95.42% fewer parameters (emphasis on sparsity) and 16x less convolution
computation (emphasis on computation), from two different weightings. The target here is both
in one model: at most 4.58% of the parameters and at most 1/16 of the convolution MACs, with
at most 0.3 points of test accuracy lost after retraining.

``two_step`` runs NSGA-II rounds over the channels and neurons (objectives error, MACs,
parameters), retraining the elite 100 steps between rounds; every candidate is fine-tuned 10
steps and scored on 1,000 validation images. Then the front candidates that meet both size
targets (convolution MACs counted by thop per layer) are retrained with one budget, and the
most accurate on validation is reported on the test split. The same is done for the default
``focused`` search (objectives error, MACs) with the same budget.

Run from the repository root:

    .venv/bin/python studies/doc001_two_step/run.py

It writes ``candidates.csv``, ``results.csv`` and ``record.json`` next to this file and prints the tables.
"""

import argparse
import os
import sys
import time

import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import write_csv, write_record  # noqa: E402

import moprune  # noqa: E402
from moprune.plotting import layer_macs_frame  # noqa: E402
from moprune.train import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_PARAMS = 1 - 0.9542
"""Document 001's parameter reduction: 95.42% fewer."""
MAX_CONV_MACS = 1 / 16
"""Document 001's convolution speed-up: 16x."""
BASELINE_RECIPE = {"epochs": 20, "augment": "crop"}
"""The same lenet5_caffe baseline as studies/lenet5_caffe_vs_published (20 epochs, +-2 pixel shifts)."""


def conv_macs_ratio(base, space, genome):
    """Convolution MACs of the pruned model as a fraction of the base's (thop, per layer)."""
    frame = layer_macs_frame(base, (space, genome))
    conv = frame[frame["type"] == "Conv2d"]
    return float(conv["macs_pruned"].sum() / conv["macs_base"].sum())


def meeting_targets(result, base, n_max):
    """Every archived candidate meeting both size targets, the ``n_max`` most accurate (search time)."""
    frame = moprune.to_frame(result)
    frame = frame[(frame["params_ratio"] <= MAX_PARAMS) & frame["accuracy"].notna()]
    frame = frame.drop_duplicates("plan_key") if "plan_key" in frame else frame
    frame = frame.sort_values("accuracy", ascending=False)
    rows = []
    for index, row in frame.iterrows():
        conv = conv_macs_ratio(base, result.space, row["genome"])
        if conv <= MAX_CONV_MACS:
            rows.append(row.to_dict() | {"eval": index, "conv_macs_ratio": conv})
        if len(rows) == n_max:
            break
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pop-size", type=int, default=20)
    parser.add_argument("--evals", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=4, help="candidates meeting the size targets retrained")
    parser.add_argument("--epochs", type=int, default=10, help="retraining epochs of each candidate")
    parser.add_argument("--lr", type=float, default=0.02, help="retraining learning rate (cosine decay)")
    parser.add_argument("--distill", type=float, default=0.0,
                        help="weight of distillation from the base model while retraining (retrain's distill_weight)")
    parser.add_argument("--budget", action="store_true",
                        help="the focused search gets the size targets as its budget (max_params, and max_macs at "
                             "the conv target: a bound on all MACs, so the conv-MACs filter still applies)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=HERE, help="folder of the outputs (default: next to this file)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = moprune.load_mnist()
    base = moprune.pretrained("lenet5_caffe", data=splits, progress=False, **BASELINE_RECIPE)
    base_val, base_test = evaluate(base, splits.val), evaluate(base, splits.test)
    space = moprune.ChannelSpace(base, encoding="binary")

    def problem(objectives):
        evaluator = moprune.Evaluator(splits.val, n_samples=1000, finetune=10, train_data=splits.train,
                                      n_train_samples=5000, seed=args.seed, num_threads=args.threads)
        return moprune.PruningProblem(space, evaluator, objectives=objectives)

    searches = {
        "two_step (nsga2 rounds; error, MACs, params)": dict(
            problem=problem(("error", "macs", "params")), algorithm="two_step",
            options={"n_rounds": args.rounds, "retrain_steps": 100}),
        "focused (default; error, MACs)": dict(
            problem=problem(("error", "macs")), algorithm="focused",
            options={"max_params": MAX_PARAMS, "max_macs": MAX_CONV_MACS} if args.budget else {}),
    }
    candidates, results = [], []
    for name, spec in searches.items():
        t0 = time.perf_counter()
        result = moprune.search(spec["problem"], spec["algorithm"], pop_size=args.pop_size, n_evals=args.evals,
                                seed=args.seed, **spec["options"])
        search_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = meeting_targets(result, base, args.candidates)
        for row in rows:
            # result.space carries two_step's retrained weights (the original ones for focused)
            done = moprune.retrain((result.space, row["genome"]), data=splits, base_model=base, epochs=args.epochs,
                                   lr=args.lr, seed=args.seed, augment="crop", distill_weight=args.distill)
            candidates.append({"search": name, "eval": row["eval"], "search_accuracy": row["accuracy"],
                               "val_accuracy": done.val_accuracy, "test_accuracy": done.test_accuracy,
                               "test_drop_points": 100 * (base_test - done.test_accuracy),
                               "params_ratio": done.params_ratio, "macs_ratio": done.macs_ratio,
                               "conv_macs_ratio": row["conv_macs_ratio"],
                               "kept": "-".join(str(int(v)) for k, v in row.items() if str(k).startswith("kept/"))})
            print(candidates[-1], flush=True)
        mine = [c for c in candidates if c["search"] == name]
        best = max(mine, key=lambda c: c["val_accuracy"]) if mine else None
        results.append({"search": name, "evaluations": len(result.archive), "search_s": round(search_s),
                        "candidates_meeting_sizes": len(rows), "retrain_s": round(time.perf_counter() - t0),
                        **({k: best[k] for k in ("val_accuracy", "test_accuracy", "test_drop_points", "params_ratio",
                                                 "conv_macs_ratio", "macs_ratio")} if best else {})})
        print(results[-1], flush=True)
    results = pd.DataFrame(results)
    results.insert(1, "base_test_accuracy", base_test)
    results["meets_target"] = (results["test_drop_points"] <= 0.3) if "test_drop_points" in results else False
    os.makedirs(args.out, exist_ok=True)
    write_csv(pd.DataFrame(candidates), os.path.join(args.out, "candidates.csv"), index=False)
    write_csv(results, os.path.join(args.out, "results.csv"), index=False)
    record = write_record(args.out, wall_s=time.perf_counter() - start,
                         extra={"base_test_accuracy": round(base_test, 4), "base_val_accuracy": round(base_val, 4)})
    pd.set_option("display.width", 200)
    print(pd.DataFrame(candidates).drop(columns=["kept"]).round(4).to_string(index=False))
    print(results.round(4).to_string(index=False))
    print(f"wall time {record['wall_s']:.0f} s; {record['command']}")


if __name__ == "__main__":
    main()
