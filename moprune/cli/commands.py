"""The subcommands of ``moprune``: each takes the parsed arguments and returns an exit code.

Only this package prints; the library logs.
"""

import math
import os
import time

from moprune.cli import config as cfg
from moprune.exceptions import MopruneError, MopruneValueError

# ----------------------------------------------------------------------------- helpers
SEARCH_OPTIONS = tuple(cfg.DEFAULTS)


def _print_table(df):
    print(df.to_string())


def front_table(front):
    """The columns of a front worth reading, in percent."""
    import pandas as pd

    table = pd.DataFrame({
        "generation": front["generation"].astype(int),
        "accuracy %": (100 * front["accuracy"]).round(2),
        "drop (points)": front["accuracy_drop"].round(2),
        "MACs %": (100 * front["macs_ratio"]).round(2),
        "params %": (100 * front["params_ratio"]).round(2),
        "sparsity %": (100 * front["sparsity"]).round(2),
    }, index=front.index)
    table.index.name = "eval"
    return table


def _pick_kwargs(args):
    """``pick`` keyword arguments from ``--pick/--method``, ``--max-drop``, ``--target-macs``, ``--weights``."""
    method = args.method
    kwargs = {}
    if args.max_drop is not None:
        method = method or "max_drop"
        kwargs["max_drop"] = args.max_drop
    if args.target_macs is not None:
        method = method or "target_macs"
        kwargs["target_macs"] = args.target_macs
    if args.pick_weights is not None:
        try:
            kwargs["weights"] = [float(w) for w in args.pick_weights.split(",")]
        except ValueError:
            raise MopruneValueError(f"--pick-weights must be numbers separated by commas; got "
                                    f"{args.pick_weights!r}") from None
    return method or "knee", kwargs


def _pick(result, args):
    from moprune.results import pareto_front, pick

    method, kwargs = _pick_kwargs(args)
    front = pareto_front(result)
    return method, pick(front, method, **kwargs)


def _describe_row(row):
    return (f"eval {row.name} (generation {int(row['generation'])}): validation accuracy "
            f"{100 * row['accuracy']:.2f}% (drop {row['accuracy_drop']:.2f} points), "
            f"MACs {100 * row['macs_ratio']:.2f}% of the base, params {100 * row['params_ratio']:.2f}%, "
            f"sparsity {100 * row['sparsity']:.2f}%")


def cfg_read(path):
    from moprune.runs import read_config

    config = read_config(path)
    if config is None:
        raise MopruneError(f"{path!r} is not a moprune run directory (no config.json)")
    return cfg.validate({**cfg.DEFAULTS, **config})


def _rebuild(path, *, progress=False):
    """Data, base model and space of the run in ``path``."""
    config = cfg_read(path)
    data = cfg.load_data(config["data"])
    model = cfg.load_model(config, data, progress=progress)
    space = cfg.build_space(config, model, data)
    return config, data, model, space


# ----------------------------------------------------------------------------- train
def cmd_train(args):
    from moprune.data import load_mnist
    from moprune.models import DEFAULT_RECIPE, pretrained
    from moprune.train import evaluate

    data = load_mnist()
    recipe = {k: getattr(args, k) for k in DEFAULT_RECIPE}
    model = pretrained(args.model, data=data, progress=not args.quiet, **recipe)
    val = evaluate(model, data.val)
    test = evaluate(model, data.test)
    print(f"{args.model}: validation accuracy {100 * val:.2f}% (10,000 images), "
          f"test accuracy {100 * test:.2f}% (10,000 images)")
    return 0


# ----------------------------------------------------------------------------- search
def _given_settings(args):
    given = {}
    for key in SEARCH_OPTIONS:
        if key in vars(args) and key != "algorithm_options":
            given[key] = getattr(args, key)
    if getattr(args, "algo_option", None):
        given["algorithm_options"] = dict(cfg.parse_option(text) for text in args.algo_option)
    return given


def cmd_search(args):
    from moprune.runs import prepare_run, read_config

    given = _given_settings(args)
    if args.resume is not None:
        if args.out is not None and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise MopruneValueError("--resume names the run directory; --out must be left out or be the same")
        if args.force:
            raise MopruneValueError("--resume and --force cannot be used together")
        stored = read_config(args.resume)
        if stored is None:
            raise MopruneError(f"there is no run to resume in {args.resume!r} (no config.json)")
        file_settings = cfg.read_toml(args.config) if args.config else {}
        asked = cfg.resolve({**stored, **file_settings, **given})
        config = cfg.validate({**cfg.DEFAULTS, **stored})
        from moprune.runs import config_differences

        diff = config_differences(config, asked)
        if diff:
            raise MopruneError(f"{args.resume!r} holds a run with other settings ({diff}); --resume "
                               "continues it as it was configured: leave those options out")
        out = args.resume
    else:
        if args.out is None:
            raise MopruneValueError("--out DIR is required (the run directory), or --resume DIR")
        file_settings = cfg.read_toml(args.config) if args.config else {}
        config = cfg.resolve(given, file_settings=file_settings)
        out = args.out
    mode = prepare_run(out, config, resume=args.resume is not None, force=args.force)
    result = execute_search(out, config, resume=mode == "resume", quiet=args.quiet)
    _print_search_summary(out, result)
    return 0


def execute_search(out, config, *, resume, quiet=False):
    """Build the run's objects from ``config`` and run (or resume) it in ``out`` with a bar."""
    from tqdm.auto import tqdm

    from moprune.results import hypervolume, to_frame
    from moprune.runs import run_search

    data = cfg.load_data(config["data"])
    model = cfg.load_model(config, data, progress=not quiet)
    problem = cfg.build_problem(config, model, data)
    budget = cfg.search_budget(config)
    total = budget.get("n_gen")
    bar = tqdm(total=total, unit="gen", desc="search", disable=True if quiet else None, dynamic_ncols=True)

    def on_generation(root, info):
        from moprune.archive import SearchResult

        archive = root.archive
        ok = [e for e in archive if e.error is None and math.isfinite(e.accuracy)]
        hv = hypervolume(to_frame(SearchResult(archive=archive, objectives=tuple(root.objectives),
                                               algorithm=config["algorithm"], seed=config["seed"],
                                               base_accuracy=root.base_accuracy, base_macs=root.base_macs,
                                               base_params=root.base_params,
                                               max_accuracy_drop=root.max_accuracy_drop)),
                         objectives=tuple(root.objectives))
        bar.n = info["generation"] + 1
        bar.set_postfix({
            "evals": len(archive),
            "cached": sum(e.cached for e in archive),
            "best_acc": f"{100 * max((e.accuracy for e in ok), default=math.nan):.2f}%",
            "min_macs": f"{100 * min((e.macs_ratio for e in ok), default=math.nan):.1f}%",
            "hv": f"{hv:.4f}",
        }, refresh=False)
        bar.refresh()

    try:
        result = run_search(out, problem, config["algorithm"], pop_size=config["pop_size"], seed=config["seed"],
                            resume=resume, on_generation=on_generation, options=config["algorithm_options"],
                            **budget)
    finally:
        bar.close()
    return result


def _print_search_summary(out, result):
    from moprune.results import hypervolume, pareto_front

    front = pareto_front(result)
    n_cached = sum(e.cached for e in result.archive)
    print(f"search finished: {len(result.archive)} candidates ({n_cached} from the cache), "
          f"{len(front)} on the Pareto front, hypervolume {hypervolume(result):.4f}; "
          f"base accuracy {100 * result.base_accuracy:.2f}%")
    print(f"run directory: {out} (next: moprune report {out})")


# ----------------------------------------------------------------------------- report
def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(path, result):
    """Write ``pareto.csv``, ``pareto.png`` and ``convergence.png`` into run directory ``path``;
    returns the front."""
    from moprune.plotting import plot_convergence, plot_pareto
    from moprune.results import compare, pareto_front, pick
    from moprune.runs import encode_genome

    plt = _mpl()
    front = pareto_front(result)
    table = front.copy()
    table["genome"] = [encode_genome(g) for g in table["genome"]]
    table.to_csv(os.path.join(path, "pareto.csv"))
    knee = pick(front, "knee") if len(front) else None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    plot_pareto(result, pick=knee, ax=ax)
    ax.set_title(f"{result.algorithm}: {len(result.archive)} candidates, {len(front)} on the front")
    fig.tight_layout()
    fig.savefig(os.path.join(path, "pareto.png"), dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_convergence(compare({result.algorithm: result}), ax=ax)
    fig.tight_layout()
    fig.savefig(os.path.join(path, "convergence.png"), dpi=120)
    plt.close(fig)
    return front


def cmd_report(args):
    from moprune.results import hypervolume
    from moprune.runs import load_result

    result = load_result(args.run, partial=args.partial)
    front = write_report(args.run, result)
    print(f"{args.run}: {result.algorithm}, seed {result.seed}, {len(result.archive)} candidates, base "
          f"accuracy {100 * result.base_accuracy:.2f}%, hypervolume {hypervolume(result):.4f}")
    print(f"Pareto front ({len(front)} points):")
    _print_table(front_table(front))
    print(f"wrote {', '.join(os.path.join(args.run, f) for f in ('pareto.csv', 'pareto.png', 'convergence.png'))}")
    return 0


# ----------------------------------------------------------------------------- pick
def cmd_pick(args):
    from moprune.runs import load_result

    result = load_result(args.run)
    method, row = _pick(result, args)
    print(f"picked by {method}: {_describe_row(row)}")
    _print_table(front_table(row.to_frame().T))
    return 0


# ----------------------------------------------------------------------------- retrain / export
def _macs_line(prefix, macs_ratio, params_ratio):
    return (f"{prefix}MACs -{100 * (1 - macs_ratio):.1f}% ({100 * macs_ratio:.2f}% of the base), "
            f"params -{100 * (1 - params_ratio):.1f}% ({100 * params_ratio:.2f}% of the base)")


def retrain_picked(path, args, *, epochs, train_samples=None, lr=0.05, seed=0, output=None, quiet=False):
    """Pick, retrain, print and export the retrained model of run ``path``; returns the RetrainResult."""
    import torch

    from moprune.data import Splits, subset
    from moprune.exporting import export
    from moprune.retraining import retrain
    from moprune.runs import load_result

    result = load_result(path)
    method, row = _pick(result, args)
    print(f"picked by {method}: {_describe_row(row)}")
    config, data, model, space = _rebuild(path, progress=not quiet)
    train = data.train
    if train_samples is not None:
        if train_samples < 1:
            raise MopruneValueError(f"--train-samples must be an int >= 1; got {train_samples}")
        train = subset(train, min(train_samples, len(train)), generator=torch.Generator().manual_seed(seed))
    out = retrain((space, row), data=Splits(train, data.val, data.test), base_model=model, epochs=epochs, lr=lr,
                  seed=seed, progress=not quiet)
    print(f"retrained {epochs} epoch(s) on {len(train):,} images: test accuracy {100 * out.test_accuracy:.2f}% "
          f"(base model {100 * out.base_test_accuracy:.2f}%), validation {100 * out.val_accuracy:.2f}%")
    print(_macs_line("", out.macs_ratio, out.params_ratio))
    output = output or os.path.join(path, "retrained.pt")
    export(out.model, output, meta={"run": os.path.abspath(path), "eval": int(row.name), "method": method,
                                    "test_accuracy": float(out.test_accuracy),
                                    "macs_ratio": float(out.macs_ratio), "params_ratio": float(out.params_ratio),
                                    "epochs": int(epochs)})
    print(f"exported the retrained model to {output} (moprune.load({output!r}))")
    return out


def cmd_retrain(args):
    retrain_picked(args.run, args, epochs=args.epochs, train_samples=args.train_samples, lr=args.lr,
                   seed=args.seed, output=args.output, quiet=args.quiet)
    return 0


def cmd_export(args):
    import torch

    from moprune.exporting import export, export_onnx
    from moprune.runs import load_result

    result = load_result(args.run)
    method, row = _pick(result, args)
    print(f"picked by {method}: {_describe_row(row)}")
    config, data, model, space = _rebuild(args.run, progress=not args.quiet)
    pruned = space.materialize(row["genome"])
    output = args.output or os.path.join(args.run, "pruned.pt")
    export(pruned, output, meta={"run": os.path.abspath(args.run), "eval": int(row.name), "method": method,
                                 "val_accuracy": float(row["accuracy"]), "macs_ratio": float(row["macs_ratio"]),
                                 "params_ratio": float(row["params_ratio"])})
    print(f"exported the pruned model (not retrained) to {output}")
    if args.onnx:
        onnx_path = os.path.splitext(output)[0] + ".onnx"
        export_onnx(pruned, onnx_path, torch.zeros(1, *data.val.tensors[0].shape[1:]))
        print(f"exported ONNX to {onnx_path}")
    return 0


# ----------------------------------------------------------------------------- compare
def cmd_compare(args):
    import pandas as pd

    from moprune.plotting import plot_convergence
    from moprune.results import compare, hypervolume
    from moprune.runs import load_result

    groups, finals = {}, []
    for path in args.runs:
        result = load_result(path)
        label = result.algorithm if args.by_algorithm else os.path.basename(os.path.normpath(path))
        if label in groups and not args.by_algorithm:
            label = path
        groups.setdefault(label, []).append(result)
        finals.append({"label": label, "run": path, "algorithm": result.algorithm, "seed": result.seed,
                       "evaluations": len(result.archive), "hypervolume": hypervolume(result)})
    table = pd.DataFrame(finals)
    summary = table.groupby("label", sort=False).agg(runs=("run", "count"), evaluations=("evaluations", "max"),
                                                     hv_mean=("hypervolume", "mean"),
                                                     hv_std=("hypervolume", "std"))
    print("final hypervolume (error x MACs, reference point 1):")
    _print_table(summary.round(4))
    curves = compare(groups)
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_convergence(curves, ax=ax)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=120)
    plt.close(fig)
    print(f"wrote the convergence plot to {args.output}")
    return 0


# ----------------------------------------------------------------------------- demo
DEMO_CONFIG = {
    "model": "mnist_cnn",
    "space": "channels",
    "encoding": "binary",
    "algorithm": "nsga2",
    "pop_size": 20,
    "generations": 12,
    "seed": 0,
    "val_samples": 1000,
    "finetune_steps": 10,
    "train_samples": 5000,
    "threads": 1,
}
"""The demo's search: settings over :data:`moprune.cli.config.DEFAULTS`."""

DEMO_RETRAIN_EPOCHS = 1


def cmd_demo(args):
    from moprune.models import DEFAULT_RECIPE, weights_path
    from moprune.runs import prepare_run, read_config

    # candidates are evaluated on one thread (DEMO_CONFIG["threads"]); the baseline training
    # and the retraining keep torch's default, which is faster for them on an idle machine
    start = time.perf_counter()
    out = args.out
    config = cfg.resolve(dict(DEMO_CONFIG))
    stored = read_config(out)
    from moprune.runs import config_differences

    resume = stored is not None and not args.force and not config_differences(stored, config)
    print(f"moprune demo: NSGA-II over the channels of the mnist_cnn baseline, {config['pop_size']} x "
          f"{config['generations']} candidates, then the knee retrained {DEMO_RETRAIN_EPOCHS} epoch; "
          f"everything in {out}")
    if not os.path.isfile(weights_path("mnist_cnn", DEFAULT_RECIPE)):
        print(f"first run: training the mnist_cnn baseline ({DEFAULT_RECIPE['epochs']} epochs on 50,000 images, "
              "a few minutes; cached for later runs)", flush=True)
    prepare_run(out, config, resume=resume, force=args.force)
    result = execute_search(out, config, resume=resume, quiet=args.quiet)
    _print_search_summary(out, result)
    front = write_report(out, result)
    print(f"Pareto front ({len(front)} points):")
    _print_table(front_table(front))
    args.method, args.max_drop, args.target_macs, args.pick_weights = "knee", None, None, None
    retrained = retrain_picked(out, args, epochs=DEMO_RETRAIN_EPOCHS, quiet=args.quiet)
    print(f"demo done in {time.perf_counter() - start:.0f} s: test accuracy "
          f"{100 * retrained.test_accuracy:.2f}% with {100 * (1 - retrained.macs_ratio):.1f}% fewer MACs "
          f"(plots in {out}/pareto.png and {out}/convergence.png)")
    return 0
