"""The ``moprune`` command line: search, report, pick, retrain, export, compare, demo, train, data.

Every subcommand is a small function in :mod:`moprune.cli.commands`; settings of a search are
resolved in :mod:`moprune.cli.config`. Exit codes: 0 success, 2 bad input (unknown names and
options list the choices) or any :class:`moprune.MopruneError`.
"""

import argparse
import contextlib
import signal
import sys

__all__ = ["build_parser", "main"]


@contextlib.contextmanager
def holding_ctrl_c():
    """Hold Ctrl-C back while libraries with C++ extensions load, then deliver it.

    A SIGINT whose handler runs inside a pybind11 module's initialisation (torch, matplotlib)
    escapes as a C++ exception and aborts the interpreter ("terminate called ...", exit -6).
    Blocked here, it stays pending and becomes an ordinary KeyboardInterrupt once the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _load_libraries():
    """Import the heavy libraries every command needs, with Ctrl-C held back (see holding_ctrl_c)."""
    with holding_ctrl_c():
        import pandas  # noqa: F401
        import pymoo.core.problem  # noqa: F401
        import thop  # noqa: F401
        import torch  # noqa: F401
        import torch_pruning  # noqa: F401


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose "unrecognized arguments" error lists the options it knows."""

    def error(self, message):
        if message.startswith("unrecognized arguments"):
            options = sorted({s for a in self._actions for s in a.option_strings if s.startswith("--")})
            message += f"; choose among: {', '.join(options)}"
        super().error(message)


def _add_pick_options(p):
    from moprune.results import PICK_METHODS

    p.add_argument("--pick", "--method", dest="method", choices=PICK_METHODS.names(), default=None,
                   help="how to pick a point of the front (default knee; --max-drop/--target-macs imply theirs)")
    p.add_argument("--max-drop", type=float, default=None,
                   help="fewest MACs losing at most this many accuracy points")
    p.add_argument("--target-macs", type=float, default=None,
                   help="most accurate point with at most this MACs ratio (e.g. 0.1)")
    p.add_argument("--pick-weights", default=None, help="weights for asf/pseudo_weights, e.g. 0.5,0.5")


def _add_search_options(p):
    from moprune.algorithms import ALGORITHMS
    from moprune.cli.config import DEFAULT_GENERATIONS, DEFAULTS, SPACES

    S = argparse.SUPPRESS  # only options the user gives are set (they override --config)
    p.add_argument("--config", default=None, help="TOML file of settings (keys as the options, with _)")
    p.add_argument("--out", default=None, help="run directory (e.g. runs/NAME)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR")
    p.add_argument("--restart-from-csv", dest="restart_from_csv", default=None, metavar="DIR",
                   help="start the run in DIR over with its settings, reusing the accuracies in its "
                        "evaluations.csv (kept as evaluations.previous.csv); for a checkpoint that cannot be used")
    p.add_argument("--force", action="store_true",
                   help="start over in an --out that holds another run (deletes its files; refused while it runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--model", default=S,
                   help=f"zoo model or FILE.py:FACTORY (default {DEFAULTS['model']})")
    p.add_argument("--weights", default=S, help="state_dict file of the model (default: the cached baseline)")
    p.add_argument("--data", default=S,
                   help="mnist (default), fashion-mnist, fashion-mnist:FOLDER, mnist-idx:FOLDER or cifar10:FOLDER")
    p.add_argument("--baseline-epochs", dest="baseline_epochs", type=int, default=S,
                   help="epochs of the zoo baseline when no --weights (default: the data set's recipe)")
    p.add_argument("--space", choices=SPACES, default=S, help="default channels")
    p.add_argument("--encoding", default=S, help="channels: binary (default) or ratio; weights: ratio or mask")
    p.add_argument("--layers", default=S, help="comma-separated layer names to search (default all)")
    p.add_argument("--objectives", default=S, help="comma-separated, default error,macs")
    p.add_argument("--max-accuracy-drop", dest="max_accuracy_drop", type=float, default=S,
                   help="constraint in accuracy points")
    p.add_argument("--algorithm", choices=ALGORITHMS.names(), default=S, help="default focused (NSGA-II with pruning-aware operators)")
    p.add_argument("--algo-option", action="append", default=None, metavar="KEY=VALUE",
                   help="an option of the algorithm's factory (repeatable)")
    p.add_argument("--pop-size", dest="pop_size", type=int, default=S, help=f"default {DEFAULTS['pop_size']}")
    p.add_argument("--generations", type=int, default=S, help=f"default {DEFAULT_GENERATIONS}")
    p.add_argument("--evaluations", type=int, default=S, help="budget in candidates instead of generations")
    p.add_argument("--seed", type=int, default=S, help="default 0")
    p.add_argument("--val-samples", dest="val_samples", type=int, default=S,
                   help=f"validation images per candidate (default {DEFAULTS['val_samples']})")
    p.add_argument("--confirm-samples", dest="confirm_samples", default=S,
                   help="validation images beyond --val-samples on which the candidates that could enter the "
                        "front are measured again: auto (as many again, when the validation split holds them), "
                        "none, or a number")
    p.add_argument("--finetune-steps", dest="finetune_steps", type=int, default=S,
                   help="SGD steps of fine-tuning per candidate (default: the Evaluator's, 20; 0: none)")
    p.add_argument("--train-samples", dest="train_samples", type=int, default=S,
                   help="training images used for fine-tuning (default all)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=S, help="evaluation batch (default 250)")
    p.add_argument("--threads", type=int, default=S,
                   help="torch threads while evaluating (with --workers: per worker, default cores // workers)")
    p.add_argument("--workers", type=int, default=S,
                   help="evaluate each generation's candidates in this many worker processes (default: in this "
                        "process); a run may be resumed with another number")
    p.add_argument("--backend", choices=("local", "ray"), default=S,
                   help="where the --workers run: local processes (default) or Ray actors (pip install "
                        "\"moprune[ray]\"); a run may be resumed with the other")
    p.add_argument("--ray-address", dest="ray_address", default=S, metavar="ADDRESS",
                   help="with --backend ray: join this cluster (auto, or ray://host:port) instead of starting a "
                        "local Ray instance")
    _add_device_option(p, S)


def _add_device_option(p, default="auto"):
    p.add_argument("--device", default=default,
                   help="where networks run: auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")


def build_parser():
    """The argument parser of the ``moprune`` command."""
    from moprune.cli import commands
    from moprune.models import DEFAULT_RECIPE, model_names
    from moprune.version import __version__

    parser = _Parser(prog="moprune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"moprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="the embedded demo: search mnist_cnn's channels, retrain small front models, keep the best")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--force", action="store_true", help="start over even if the folder holds a demo run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device_option(p)
    p.set_defaults(func=commands.cmd_demo)

    p = sub.add_parser("search", help="search a pruning, with a checkpoint after every generation")
    _add_search_options(p)
    p.set_defaults(func=commands.cmd_search)

    p = sub.add_parser("report", help="print the Pareto front; write pareto.csv, pareto.png, convergence.png")
    p.add_argument("run", help="run directory")
    p.add_argument("--partial", action="store_true", help="report an unfinished run up to its last checkpoint")
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser("pick", help="print the point of the front a method picks")
    p.add_argument("run", help="run directory")
    _add_pick_options(p)
    p.set_defaults(func=commands.cmd_pick)

    p = sub.add_parser("retrain", help="retrain the picked point, print test accuracy and MACs, export it")
    p.add_argument("run", help="run directory")
    _add_pick_options(p)
    p.add_argument("--epochs", type=int, default=5, help="default 5")
    p.add_argument("--lr", type=float, default=0.05, help="default 0.05")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-samples", dest="train_samples", type=int, default=None,
                   help="retrain on a random subset of the training split (default all)")
    p.add_argument("--output", default=None, help="exported file (default RUN/retrained.pt)")
    p.add_argument("--front", type=int, default=None, metavar="N",
                   help="instead of one pick, retrain N front points spread along MACs; write "
                        "RUN/retrained_front.csv and .png")
    p.add_argument("--min-macs", dest="min_macs", type=float, default=None,
                   help="with --front: only front points with at least this MACs ratio (e.g. 0.02)")
    p.add_argument("--max-macs", dest="max_macs", type=float, default=None,
                   help="with --front: only front points with at most this MACs ratio (e.g. 0.3)")
    p.add_argument("--uniform-twins", dest="uniform_twins", action="store_true",
                   help="with --front: also retrain each point's uniform-pruning twin (same MACs) and keep "
                        "the better on validation (twice the retraining)")
    p.add_argument("--race", type=int, default=0, metavar="K",
                   help="with --front: race K contenders of each point's size by short retrainings (successive "
                        "halving), then the winner against the uniform twin at the full budget (about 2 + log2 K "
                        "retrainings per point; implies --uniform-twins)")
    p.add_argument("--within", type=float, default=None, metavar="MACS",
                   help="instead: the model that retrains best within this MACs ratio (e.g. 0.05): a race of --race "
                        "models (default 8) of the budget's size, then the winner against uniform pruning "
                        "(writes RUN/retrained_within.pt or --output)")
    p.add_argument("--decompose", type=int, default=None, metavar="K",
                   help="with --within: K of the raced models are channel-pruned and decomposed (SVD, Tucker-2; "
                        "document 004's 'D + Ps') models of the same size (default: moprune.retrain_within's)")
    p.add_argument("--no-reconstruct", dest="reconstruct", action="store_false", default=None,
                   help="retrain the inherited weights as they are (default: refit each layer to the base model's "
                        "outputs first, for models without BatchNorm; moprune.retrain's reconstruct)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device_option(p)
    p.set_defaults(func=commands.cmd_retrain)

    p = sub.add_parser("export", help="export the picked pruned model (not retrained)")
    p.add_argument("run", help="run directory")
    _add_pick_options(p)
    p.add_argument("--output", default=None, help="exported file (default RUN/pruned.pt)")
    p.add_argument("--onnx", action="store_true", help="also write an .onnx beside it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=commands.cmd_export)

    p = sub.add_parser("compare", help="hypervolume table of several runs and a convergence plot")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--by-algorithm", action="store_true", help="group runs by algorithm (mean over seeds)")
    p.add_argument("--output", default="compare.png", help="convergence plot (default compare.png)")
    p.set_defaults(func=commands.cmd_compare)

    p = sub.add_parser("train", help="train (once) and cache a zoo baseline on MNIST or Fashion-MNIST; "
                                     "print its validation and test accuracy")
    p.add_argument("model", choices=model_names(), help="zoo model name")
    p.add_argument("--data", default="mnist",
                   help="mnist (default), fashion-mnist, fashion-mnist:FOLDER, mnist-idx:FOLDER or cifar10:FOLDER")
    recipe = "default: the data set's recipe"
    p.add_argument("--epochs", type=int, default=None, help=f"{recipe} (MNIST {DEFAULT_RECIPE['epochs']})")
    p.add_argument("--lr", type=float, default=None, help=f"{recipe} (MNIST {DEFAULT_RECIPE['lr']})")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                   help=f"{recipe} (MNIST {DEFAULT_RECIPE['batch_size']})")
    p.add_argument("--weight-decay", dest="weight_decay", type=float, default=None,
                   help=f"{recipe} (MNIST {DEFAULT_RECIPE['weight_decay']})")
    p.add_argument("--seed", type=int, default=None, help=f"{recipe} (MNIST {DEFAULT_RECIPE['seed']})")
    p.add_argument("--augment", choices=("none", "flip", "flip+crop", "crop"), default=None,
                   help=f"{recipe} (MNIST none, Fashion-MNIST flip+crop)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device_option(p)
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser("data", help="data sets: `moprune data fetch fashion-mnist`")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True, parser_class=_Parser)
    q = data_sub.add_parser("fetch", help="put a data set into the cache ($MOPRUNE_CACHE) without root: for "
                                          "fashion-mnist, apt-get download of the Debian package "
                                          "dataset-fashion-mnist, dpkg-deb -x, SHA-256 verified")
    q.add_argument("dataset", choices=("fashion-mnist",), help="the data set")
    q.set_defaults(func=commands.cmd_data_fetch)
    return parser


def main(argv=None):
    """Entry point of the ``moprune`` console script; returns the exit code.

    Any :class:`moprune.MopruneError` is printed as ``moprune: error: ...`` with exit code 2;
    Ctrl-C, at any moment (even while the libraries load), exits with 130 and says what was kept.
    """
    try:
        _load_libraries()
        from moprune.exceptions import MopruneError

        try:
            parser = build_parser()
            args, extras = parser.parse_known_args(argv)
            if extras:  # let the subcommand's parser say it, listing its own options
                sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
                sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
            return args.func(args)
        except MopruneError as exc:
            print(f"moprune: error: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt as exc:
        print(f"moprune: interrupted{'; ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
