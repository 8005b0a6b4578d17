"""moprune: multi-objective pruning of neural networks with genetic algorithms.

The public API is re-exported here; everything else is an implementation detail.
"""

from moprune.data import Splits, load_cifar10, load_mnist, load_mnist_idx
from moprune.exceptions import MopruneError, MopruneValueError
from moprune.logging import get_logger, set_verbosity
from moprune.models import get_model, model_names, pretrained
from moprune.train import evaluate, finetune, fit
from moprune.version import __version__

__all__ = [
    "MopruneError",
    "MopruneValueError",
    "Splits",
    "__version__",
    "evaluate",
    "finetune",
    "fit",
    "get_logger",
    "get_model",
    "load_cifar10",
    "load_mnist",
    "load_mnist_idx",
    "model_names",
    "pretrained",
    "set_verbosity",
]
