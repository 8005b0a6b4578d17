"""The subcommands of ``moprune``: each takes the parsed arguments and returns an exit code.

Only this package prints; the library logs.
"""

import math
import os
import time

from moprune.cli import config as cfg
from moprune.cli import holding_ctrl_c
from moprune.exceptions import MopruneError, MopruneValueError, invalid_value

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


def check_output_file(path, option):
    """Refuse, before any work is done, an output path that cannot be written as a file.

    Raises:
        MopruneValueError: ``path`` is a folder, its folder is a file, or it cannot be written to.
    """
    if os.path.isdir(path):
        raise invalid_value(option, "the path of a file to write (not a folder)", f"{path} (a folder)")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # missing folders are created: check the first one that exists
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise invalid_value(option, "a file path whose folder can be created", f"{path} ({parent} is a file)")
    if not os.access(parent, os.W_OK):
        raise invalid_value(option, "a file path in a folder you can write to", f"{path} ({parent} is read-only)")


def _check_image_format(path):
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    ext = os.path.splitext(path)[1][1:].lower()
    if ext not in formats:
        raise invalid_value("--output", f"an image file ending in one of .{', .'.join(sorted(formats))}", path)


def _savefig(fig, path):
    """Save ``fig`` to ``path`` atomically (the format from its extension)."""
    from moprune.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=os.path.splitext(path)[1][1:].lower())


def cfg_read(path):
    from moprune.runs import read_config

    config = read_config(path)
    if config is None:
        raise MopruneError(f"{path!r} is not a moprune run directory (no config.json)")
    _check_model_code(path, config.get("model"))
    return cfg.validate({**cfg.DEFAULTS, **config})


def _check_model_code(path, model):
    """Refuse to import model code that may have come with a run directory someone shared.

    A run made with ``--model FILE.py:FACTORY`` stores the file's absolute path; rebuilding the
    model (``retrain``, ``export``) imports it. A relative path (moprune never writes one) or a
    file inside the run directory is code that came with the run, not the user's own.
    """
    if not isinstance(model, str) or ":" not in model or not model.rsplit(":", 1)[0].endswith(".py"):
        return
    file = model.rsplit(":", 1)[0]
    inside = os.path.realpath(file).startswith(os.path.realpath(path) + os.sep)
    if not os.path.isabs(file) or inside:
        raise MopruneError(f"the run in {path!r} names model code {file!r} "
                           f"{'inside the run directory' if inside else 'by a relative path'}, which moprune "
                           "did not write: it does not run code that came with a run directory")


def _rebuild(path, *, progress=False):
    """Data, base model and space of the run in ``path``."""
    config = cfg_read(path)
    data = cfg.load_data(config["data"])
    model = cfg.load_model(config, data, progress=progress)
    space = cfg.build_space(config, model, data)
    return config, data, model, space


# ----------------------------------------------------------------------------- train
def cmd_train(args):
    from moprune.models.baselines import DEFAULT_RECIPE, baseline_recipe, pretrained
    from moprune.train import evaluate

    _check_device(args)
    spec = cfg.check_data(args.data)
    data = cfg.load_data(spec)
    recipe = baseline_recipe(args.model, cfg.data_set(spec))  # the data set's recipe, then the options given
    recipe.update({k: getattr(args, k) for k in DEFAULT_RECIPE if getattr(args, k, None) is not None})
    if getattr(args, "augment", None) is not None:
        recipe["augment"] = None if args.augment == "none" else args.augment
    model = pretrained(args.model, data=data, progress=not args.quiet, device=args.device, **recipe)
    val = evaluate(model, data.val, device=args.device)
    test = evaluate(model, data.test, device=args.device)
    print(f"{args.model} on {spec}: validation accuracy {100 * val:.2f}% ({len(data.val):,} images), "
          f"test accuracy {100 * test:.2f}% ({len(data.test):,} images)")
    return 0


# ----------------------------------------------------------------------------- data
def cmd_data_fetch(args):
    from moprune.data.fashion import fetch_fashion_mnist

    folder = fetch_fashion_mnist()
    print(f"{args.dataset}: the four verified files are in {folder}")
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


def _interrupted(out):
    """What to tell after Ctrl-C in a search writing to ``out``."""
    from moprune.runs import CHECKPOINT

    if os.path.isfile(os.path.join(out, CHECKPOINT)):
        return f"the run is kept up to its last generation; continue it with: moprune search --resume {out}"
    return "no generation had finished, so nothing was kept; run the same command again to start over"


def cmd_search(args):
    from moprune.runs import config_differences, prepare_run, read_config

    given = _given_settings(args)
    if args.resume is not None and args.restart_from_csv is not None:
        raise MopruneValueError("--resume and --restart-from-csv cannot be used together")
    existing = args.resume if args.resume is not None else args.restart_from_csv
    if existing is not None:
        flag = "--resume" if args.resume is not None else "--restart-from-csv"
        if args.out is not None and os.path.abspath(args.out) != os.path.abspath(existing):
            raise MopruneValueError(f"{flag} names the run directory; --out must be left out or be the same")
        if args.force:
            raise MopruneValueError(f"{flag} and --force cannot be used together")
        stored = read_config(existing)
        if stored is None:
            raise MopruneError(f"there is no run to {'resume' if flag == '--resume' else 'restart'} in "
                               f"{existing!r} (no config.json)")
        file_settings = cfg.read_toml(args.config) if args.config else {}
        asked = cfg.resolve({**stored, **file_settings, **given})
        config = cfg.validate({**cfg.DEFAULTS, **stored})
        diff = config_differences(cfg.run_config(config), cfg.run_config(asked))
        if diff:
            raise MopruneError(f"{existing!r} holds a run with other settings ({diff}); {flag} "
                               "continues it as it was configured: leave those options out")
        config.update(cfg.machine_settings(asked))  # --workers and --device may change on resume
        out = existing
    else:
        if args.out is None:
            raise MopruneValueError("--out DIR is required (the run directory), or --resume DIR")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise invalid_value("--out", "a folder for the run (new, empty or holding this run)",
                                f"{args.out} (an existing file)")
        file_settings = cfg.read_toml(args.config) if args.config else {}
        config = cfg.resolve(given, file_settings=file_settings)
        out = args.out
    mode = prepare_run(out, cfg.run_config(config), resume=existing is not None, force=args.force)
    restart = args.restart_from_csv is not None
    try:
        result = execute_search(out, config, resume=mode == "resume" and not restart, restart=restart,
                                quiet=args.quiet)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(out)) from None
    _print_search_summary(out, result)
    return 0


def execute_search(out, config, *, resume, restart=False, quiet=False):
    """Build the run's objects from ``config`` and run (or resume) it in ``out`` with a bar.

    The directory must have been prepared (:func:`moprune.runs.prepare_run`); whatever fails or
    is interrupted here, before the run's first checkpoint, leaves nothing of a new run behind
    (:func:`moprune.runs.abandon_run`).
    """
    from moprune.runs import abandon_run

    try:
        return _execute_search(out, config, resume=resume, restart=restart, quiet=quiet)
    except BaseException:
        abandon_run(out)
        raise


def _execute_search(out, config, *, resume, restart, quiet):
    from tqdm.auto import tqdm

    from moprune.archive import SearchResult
    from moprune.results import hypervolume, to_frame
    from moprune.runs import run_search

    data = cfg.load_data(config["data"])
    model = cfg.load_model(config, data, progress=not quiet)
    problem = cfg.build_problem(config, model, data)
    budget = cfg.search_budget(config)
    total = budget.get("n_gen")
    bar = tqdm(total=total, unit="gen", desc="search", disable=True if quiet else None, dynamic_ncols=True)

    def show_progress(algorithm, root):
        archive = root.archive
        ok = [e for e in archive if e.error is None and math.isfinite(e.accuracy)]
        so_far = SearchResult.from_problem(root, algorithm=config["algorithm"], seed=config["seed"])
        hv = hypervolume(to_frame(so_far), objectives=tuple(root.objectives))
        bar.n = root.generation + 1
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
                            resume=resume, restart=restart, callbacks=[show_progress],
                            options=config["algorithm_options"], **budget)
    finally:
        bar.close()
    return result


def _print_search_summary(out, result):
    from moprune.results import hypervolume, pareto_front

    front = pareto_front(result)
    n_cached = sum(e.cached for e in result.archive)
    n_screened = sum(e.screened and not e.cached for e in result.archive)
    n_confirmed = sum(e.confirmed and not e.cached for e in result.archive)
    images = sorted({e.confirm_images for e in result.archive if e.confirmed and e.confirm_images})
    on = f"{'/'.join(f'{n:,}' for n in images)} more" if images else "more"
    print(f"search finished: {len(result.archive)} candidates ({n_cached} from the cache), {n_screened} stopped "
          f"early as dominated, {n_confirmed} confirmed on {on} validation images, "
          f"{len(front)} on the Pareto front, hypervolume {hypervolume(result):.4f}; "
          f"base accuracy {100 * result.base_accuracy:.2f}%")
    print(f"run directory: {out} (next: moprune report {out})")


# ----------------------------------------------------------------------------- report
def _mpl():
    with holding_ctrl_c():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import seaborn  # noqa: F401  (the plots use it; loaded here so Ctrl-C cannot abort its import)

    return plt


def write_report(path, result):
    """Write ``pareto.csv``, ``pareto.png`` and ``convergence.png`` into run directory ``path``;
    returns the front."""
    from moprune.io import atomic_path
    from moprune.plotting import plot_convergence, plot_pareto
    from moprune.results import compare, pareto_front, pick
    from moprune.runs import encode_genome

    plt = _mpl()
    front = pareto_front(result)
    table = front.copy()
    table["genome"] = [encode_genome(g) for g in table["genome"]]
    with atomic_path(os.path.join(path, "pareto.csv")) as tmp:
        table.to_csv(tmp)
    knee = pick(front, "knee") if len(front) else None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    plot_pareto(result, pick=knee, ax=ax)
    ax.set_title(f"{result.algorithm}: {len(result.archive)} candidates, {len(front)} on the front")
    fig.tight_layout()
    _savefig(fig, os.path.join(path, "pareto.png"))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_convergence(compare({result.algorithm: result}), ax=ax)
    fig.tight_layout()
    _savefig(fig, os.path.join(path, "convergence.png"))
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


def retrain_picked(path, args, *, epochs, train_samples=None, lr=0.05, seed=0, output=None, quiet=False,
                   device="auto", reconstruct=None):
    """Pick, retrain, print and export the retrained model of run ``path``; returns the RetrainResult."""
    import torch

    from moprune.data import Splits, subset
    from moprune.exporting import export
    from moprune.retraining import retrain
    from moprune.runs import load_result

    output = output or os.path.join(path, "retrained.pt")
    check_output_file(output, "--output")
    if train_samples is not None and train_samples < 1:
        raise invalid_value("--train-samples", "an int >= 1", train_samples)
    result = load_result(path)
    method, row = _pick(result, args)
    print(f"picked by {method}: {_describe_row(row)}")
    config, data, model, space = _rebuild(path, progress=not quiet)
    train = data.train
    if train_samples is not None:
        train = subset(train, min(train_samples, len(train)), generator=torch.Generator().manual_seed(seed))
    out = retrain((space, row), data=Splits(train, data.val, data.test), base_model=model, epochs=epochs, lr=lr,
                  seed=seed, progress=not quiet, device=device, reconstruct=reconstruct)
    print(f"retrained {epochs} epoch(s) on {len(train):,} images: test accuracy {100 * out.test_accuracy:.2f}% "
          f"(base model {100 * out.base_test_accuracy:.2f}%), validation {100 * out.val_accuracy:.2f}%")
    print(_macs_line("", out.macs_ratio, out.params_ratio))
    export(out.model, output, meta={"run": os.path.abspath(path), "eval": int(row.name), "method": method,
                                    "test_accuracy": float(out.test_accuracy),
                                    "macs_ratio": float(out.macs_ratio), "params_ratio": float(out.params_ratio),
                                    "epochs": int(epochs)})
    print(f"exported the retrained model to {output} (moprune.load({output!r}))")
    return out


RETRAINED_FRONT = "retrained_front"
"""Stem of the files ``retrain --front`` writes in the run directory (``.csv``, ``.png``)."""


def retrain_front_of_run(path, *, n_points, epochs, max_drop=None, max_macs=None, min_macs=None, lr=0.05, seed=0,
                         train_samples=None, uniform_twins=False, race=0, quiet=False, device="auto",
                         reconstruct=None):
    """Retrain ``n_points`` of run ``path``'s front; write ``retrained_front.csv``/``.png`` and ``front/*.pt``.

    Returns:
        The frame of :func:`moprune.retrain_front` (retrained validation accuracy in ``accuracy``).
    """
    import pandas as pd
    import torch

    plt = _mpl()

    from moprune.data import Splits, subset
    from moprune.io import atomic_path
    from moprune.plotting import plot_retrained_front
    from moprune.retraining import retrain_front
    from moprune.runs import load_result
    from moprune.validation import check_int, check_real

    n_points = check_int("--front", n_points, low=1)
    race = check_int("--race", race, low=0)
    if race == 1:
        raise invalid_value("--race", "0 (no race) or at least 2 contenders", race)
    min_macs = check_real("--min-macs", min_macs, low=0, high=1, low_open=True, allow_none=True, unit="MACs ratio")
    max_macs = check_real("--max-macs", max_macs, low=0, high=1, low_open=True, allow_none=True, unit="MACs ratio")
    if min_macs is not None and max_macs is not None and min_macs > max_macs:
        raise invalid_value("--min-macs", f"a MACs ratio at most --max-macs={max_macs}", min_macs)
    if train_samples is not None and train_samples < 1:
        raise invalid_value("--train-samples", "an int >= 1", train_samples)
    config, data, model, space = _rebuild(path, progress=not quiet)
    result = load_result(path, space=space)
    if train_samples is not None:
        data = Splits(subset(data.train, min(train_samples, len(data.train)),
                             generator=torch.Generator().manual_seed(seed)), data.val, data.test)
    frame = retrain_front(result, data=data, base_model=model, n_points=n_points, epochs=epochs, lr=lr, seed=seed,
                          max_drop=max_drop, max_macs=max_macs, min_macs=min_macs, uniform_twins=uniform_twins,
                          race=race, out_dir=os.path.join(path, "front"),
                          progress=not quiet, device=device, reconstruct=reconstruct)
    with atomic_path(os.path.join(path, RETRAINED_FRONT + ".csv")) as tmp:
        frame.drop(columns=["genome"]).to_csv(tmp)
    ax = plot_retrained_front(frame, search=result, log_macs=True, zoom=5.0)
    with atomic_path(os.path.join(path, RETRAINED_FRONT + ".png")) as tmp:
        ax.figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(ax.figure)
    base_val, base_test = frame.attrs["base_val_accuracy"], frame.attrs["base_test_accuracy"]
    print(f"retrained {len(frame)} front point(s), {epochs} epoch(s) each on {len(data.train):,} images "
          f"(base model: validation {100 * base_val:.2f}%, test {100 * base_test:.2f}%):")
    table = pd.DataFrame({
        "MACs %": (100 * frame["macs_ratio"]).round(2),
        "search val %": (100 * frame["search_accuracy"]).round(2),
        "retrained val %": (100 * frame["accuracy"]).round(2),
        "drop +- se": [f"{d:.2f} +- {e:.2f}" for d, e in zip(frame["accuracy_drop"], frame["accuracy_drop_se"])],
        "test %": (100 * frame["test_accuracy"]).round(2),
    }, index=frame.index)
    if uniform_twins or race:
        table["uniform val %"] = (100 * frame["uniform_accuracy"]).round(2)
        table["kept"] = frame["source"]
    _print_table(table)
    print(f"wrote {path}/{RETRAINED_FRONT}.csv, {path}/{RETRAINED_FRONT}.png and the models in {path}/front/")
    return frame


def _check_device(args):
    """Refuse a ``--device`` this machine lacks before any work (the message lists what it has)."""
    from moprune.devices import resolve_device

    resolve_device(args.device, "--device")


def retrain_within_of_run(path, *, max_macs, race, epochs, lr=0.05, seed=0, train_samples=None, output=None,
                          quiet=False, device="auto", decompose=None, reconstruct=None):
    """Race for the best model of run ``path`` within ``max_macs`` (:func:`moprune.retrain_within`); print and export it.

    Returns:
        The row :func:`moprune.retrain_within` returns.
    """
    import torch

    from moprune.data import Splits, subset
    from moprune.operators.pruning import uniform_costs
    from moprune.race import retrain_within
    from moprune.runs import load_result
    from moprune.validation import check_int, check_real

    max_macs = check_real("--within", max_macs, low=0, high=1, low_open=True, unit="MACs ratio")
    race = check_int("--race", race, low=2)
    if decompose is not None:
        decompose = check_int("--decompose", decompose, low=0, high=race - 1)
    if train_samples is not None and train_samples < 1:
        raise invalid_value("--train-samples", "an int >= 1", train_samples)
    output = output or os.path.join(path, "retrained_within.pt")
    check_output_file(output, "--output")
    config, data, model, space = _rebuild(path, progress=not quiet)
    smallest = float(min(uniform_costs(space)[1]["macs_ratio"]))
    if max_macs < smallest:
        raise invalid_value("--within", f"a MACs ratio at least the smallest uniform model's ({smallest:.4f})", max_macs)
    result = load_result(path, space=space)
    if train_samples is not None:
        data = Splits(subset(data.train, min(train_samples, len(data.train)),
                             generator=torch.Generator().manual_seed(seed)), data.val, data.test)
    extra = {} if decompose is None else {"decompose": decompose}
    row = retrain_within(result, max_macs, data=data, base_model=model, race=race, epochs=epochs, lr=lr, seed=seed,
                         out_path=output, device=device, reconstruct=reconstruct, **extra)
    print(f"raced {int(row['race_contenders'])} models of {100 * row['uniform_macs_ratio']:.2f}% of the MACs "
          f"(the largest uniform model within {100 * max_macs:g}%), {epochs} epoch(s) for the finalists on "
          f"{len(data.train):,} images (base model: validation {100 * row.attrs['base_val_accuracy']:.2f}%, "
          f"test {100 * row.attrs['base_test_accuracy']:.2f}%):")
    print(f"  race winner ({row['finalist_source']}): validation {100 * row['finalist_accuracy']:.2f}%, "
          f"test {100 * row['finalist_test_accuracy']:.2f}%")
    print(f"  uniform pruning:  validation {100 * row['uniform_accuracy']:.2f}%, "
          f"test {100 * row['uniform_test_accuracy']:.2f}%")
    print(f"kept the {row['source']} model: {100 * row['macs_ratio']:.2f}% of the MACs, "
          f"{100 * row['params_ratio']:.2f}% of the parameters, validation {100 * row['accuracy']:.2f}%, "
          f"test {100 * row['test_accuracy']:.2f}%; exported to {output}")
    return row


def cmd_retrain(args):
    _check_device(args)
    if getattr(args, "within", None) is not None:
        if args.front is not None:
            raise invalid_value("--within", "no --front beside it (one model within a budget, or N front points)",
                                args.within)
        retrain_within_of_run(args.run, max_macs=args.within, race=args.race or 8, epochs=args.epochs, lr=args.lr,
                              seed=args.seed, train_samples=args.train_samples, output=args.output,
                              quiet=args.quiet, device=args.device, decompose=args.decompose,
                              reconstruct=args.reconstruct)
        return 0
    if getattr(args, "decompose", None) is not None:
        raise invalid_value("--decompose", "--within beside it (decomposed models race within a budget)",
                            args.decompose)
    if getattr(args, "front", None) is not None:
        retrain_front_of_run(args.run, n_points=args.front, epochs=args.epochs, lr=args.lr, seed=args.seed,
                             min_macs=args.min_macs, max_macs=args.max_macs, train_samples=args.train_samples,
                             uniform_twins=args.uniform_twins, race=args.race, quiet=args.quiet,
                             device=args.device, reconstruct=args.reconstruct)
        return 0
    retrain_picked(args.run, args, epochs=args.epochs, train_samples=args.train_samples, lr=args.lr,
                   seed=args.seed, output=args.output, quiet=args.quiet, device=args.device,
                   reconstruct=args.reconstruct)
    return 0


def cmd_export(args):
    import torch

    from moprune.exporting import export, export_onnx
    from moprune.runs import load_result

    output = args.output or os.path.join(args.run, "pruned.pt")
    check_output_file(output, "--output")
    if args.onnx:
        check_output_file(os.path.splitext(output)[0] + ".onnx", "--output (its .onnx)")
    result = load_result(args.run)
    method, row = _pick(result, args)
    print(f"picked by {method}: {_describe_row(row)}")
    config, data, model, space = _rebuild(args.run, progress=not args.quiet)
    pruned = space.materialize(row["genome"])
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

    check_output_file(args.output, "--output")
    _check_image_format(args.output)
    seen = {}
    for path in args.runs:
        key = os.path.realpath(path)
        if key in seen:
            raise MopruneValueError(f"the run {path!r} is given twice (also as {seen[key]!r}); compare counts "
                                    "each run once: give each run directory once")
        seen[key] = path
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
    _savefig(fig, args.output)
    plt.close(fig)
    print(f"wrote the convergence plot to {args.output}")
    return 0


# ----------------------------------------------------------------------------- demo
DEMO_CONFIG = {
    "model": "mnist_cnn",
    "space": "channels",
    "encoding": "binary",
    "algorithm": "focused",
    "pop_size": 20,
    "generations": 12,
    "seed": 0,
    "val_samples": 1000,
    "finetune_steps": 10,
    "train_samples": 5000,
    "threads": 1,
}
"""The demo's search: settings over :data:`moprune.cli.config.DEFAULTS`."""

DEMO_RETRAIN_EPOCHS = 2
DEMO_FRONT_POINTS = 4
DEMO_SEARCH_DROP = 2.0
"""Front points retrained by the demo: the small models within this many points during search."""
DEMO_MAX_MACS = 0.1
DEMO_RETRAIN_LR = 0.01
DEMO_PICK_DROP = 0.3
"""The demo delivers the smallest retrained model within this many validation points of the base..."""
DEMO_PICK_MARGIN_SE = 1.0
"""...with its drop plus this many standard errors of it (paired, on the 10,000 validation images) inside."""


def cmd_demo(args):
    from moprune.models import DEFAULT_RECIPE, weights_path
    from moprune.results import pick
    from moprune.runs import config_differences, prepare_run, read_config

    # candidates are evaluated on one thread (DEMO_CONFIG["threads"]); the baseline training
    # and the retraining keep torch's default, which is faster for them on an idle machine
    start = time.perf_counter()
    out = args.out
    _check_device(args)
    config = cfg.resolve({**DEMO_CONFIG, "device": args.device})
    stored = read_config(out)
    resume = stored is not None and not args.force and not config_differences(stored, cfg.run_config(config))
    print(f"moprune demo: the default search over the channels of the mnist_cnn baseline, {config['pop_size']} x "
          f"{config['generations']} candidates, then {DEMO_FRONT_POINTS} small front models retrained "
          f"{DEMO_RETRAIN_EPOCHS} epoch(s) each and the smallest within {DEMO_PICK_DROP} points of the base kept; "
          f"everything in {out}")
    if not os.path.isfile(weights_path("mnist_cnn", DEFAULT_RECIPE)):
        print(f"first run: training the mnist_cnn baseline ({DEFAULT_RECIPE['epochs']} epochs on 50,000 images, "
              "a few minutes; cached for later runs)", flush=True)
    prepare_run(out, cfg.run_config(config), resume=resume, force=args.force)
    result = execute_search(out, config, resume=resume, quiet=args.quiet)
    _print_search_summary(out, result)
    front = write_report(out, result)
    print(f"Pareto front ({len(front)} points):")
    _print_table(front_table(front))
    frame = retrain_front_of_run(out, n_points=DEMO_FRONT_POINTS, epochs=DEMO_RETRAIN_EPOCHS, lr=DEMO_RETRAIN_LR,
                                 max_drop=DEMO_SEARCH_DROP, max_macs=DEMO_MAX_MACS, quiet=args.quiet,
                                 device=args.device)
    try:
        row = pick(frame, "max_drop", max_drop=DEMO_PICK_DROP, margin_se=DEMO_PICK_MARGIN_SE)
    except MopruneValueError:  # none within the drop after retraining: the most accurate one
        row = frame.loc[frame["accuracy"].idxmax()]
    print(f"picked after retraining: eval {row.name}, the smallest model within {DEMO_PICK_DROP} validation points "
          f"of the base with its drop plus {DEMO_PICK_MARGIN_SE:g} standard error (or the most accurate): "
          f"{row['path']}")
    print(f"demo done in {time.perf_counter() - start:.0f} s: test accuracy {100 * row['test_accuracy']:.2f}% "
          f"(base {100 * frame.attrs['base_test_accuracy']:.2f}%) with {100 * row['macs_ratio']:.2f}% of the MACs "
          f"and {100 * row['params_ratio']:.2f}% of the parameters (plots in {out}/pareto.png and "
          f"{out}/{RETRAINED_FRONT}.png)")
    return 0
