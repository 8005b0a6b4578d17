"""The ``moprune`` command line.

Subcommands grow with the library; each is a small function taking parsed arguments.
"""

import argparse
import sys

from moprune.models import DEFAULT_RECIPE, model_names


def _cmd_train(args):
    from moprune.data import load_mnist
    from moprune.models import pretrained
    from moprune.train import evaluate

    data = load_mnist()
    recipe = {k: getattr(args, k) for k in DEFAULT_RECIPE}
    model = pretrained(args.model, data=data, progress=not args.quiet, **recipe)
    val = evaluate(model, data.val)
    test = evaluate(model, data.test)
    print(f"{args.model}: validation accuracy {100 * val:.2f}% (10,000 images), "
          f"test accuracy {100 * test:.2f}% (10,000 images)")
    return 0


def build_parser():
    """The argument parser of the ``moprune`` command."""
    from moprune.version import __version__

    parser = argparse.ArgumentParser(prog="moprune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"moprune {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train (once) and cache a zoo baseline on MNIST; "
                                              "print its validation and test accuracy")
    train.add_argument("model", choices=model_names(), help="zoo model name")
    train.add_argument("--epochs", type=int, default=DEFAULT_RECIPE["epochs"])
    train.add_argument("--lr", type=float, default=DEFAULT_RECIPE["lr"])
    train.add_argument("--batch-size", dest="batch_size", type=int, default=DEFAULT_RECIPE["batch_size"])
    train.add_argument("--weight-decay", dest="weight_decay", type=float, default=DEFAULT_RECIPE["weight_decay"])
    train.add_argument("--seed", type=int, default=DEFAULT_RECIPE["seed"])
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train)
    return parser


def main(argv=None):
    """Entry point of the ``moprune`` console script; returns the exit code."""
    from moprune.exceptions import MopruneError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MopruneError as exc:
        print(f"moprune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
