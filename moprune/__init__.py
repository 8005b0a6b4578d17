"""moprune: multi-objective pruning of neural networks with genetic algorithms.

The public API is re-exported here; everything else is an implementation detail.

Example:
    >>> import moprune
    >>> splits = moprune.load_mnist()
    >>> model = moprune.pretrained("mnist_cnn")
    >>> space = moprune.ChannelSpace(model, encoding="binary")
    >>> problem = moprune.PruningProblem(space, moprune.Evaluator(splits.val), objectives=("error", "macs"))
    >>> result = moprune.search(problem, "nsga2", pop_size=20, n_gen=10, seed=0)
    >>> front = moprune.pareto_front(result)
    >>> row = moprune.pick(front, method="knee")
"""

# The names below are imported on first use (PEP 562), so that ``import moprune`` and the command
# line start at once: torch, pymoo and pandas load when something needs them, and a Ctrl-C
# while they load reaches the command line's handler instead of ending in a traceback.
import importlib
from typing import TYPE_CHECKING

from moprune.version import __version__

_EXPORTS = {
    "Evaluation": "moprune.archive", "SearchResult": "moprune.archive",
    "Splits": "moprune.data", "load_cifar10": "moprune.data", "load_mnist": "moprune.data",
    "load_mnist_idx": "moprune.data", "fetch_fashion_mnist": "moprune.data", "load_fashion_mnist": "moprune.data",
    "available_devices": "moprune.devices", "resolve_device": "moprune.devices",
    "Evaluator": "moprune.evaluation",
    "MopruneError": "moprune.exceptions", "MopruneValueError": "moprune.exceptions",
    "export": "moprune.exporting", "export_onnx": "moprune.exporting", "load": "moprune.exporting",
    "get_logger": "moprune.logging", "set_verbosity": "moprune.logging",
    "get_model": "moprune.models", "model_names": "moprune.models", "pretrained": "moprune.models",
    "PruningProblem": "moprune.problem",
    "compare": "moprune.results", "hypervolume": "moprune.results", "pareto_front": "moprune.results",
    "pick": "moprune.results", "to_frame": "moprune.results",
    "RetrainResult": "moprune.retraining", "retrain": "moprune.retraining", "retrain_front": "moprune.retraining",
    "retrain_within": "moprune.race",
    "search": "moprune.searching",
    "ChannelSpace": "moprune.space", "Plan": "moprune.space", "Space": "moprune.space",
    "WeightSpace": "moprune.space", "LowRankSpace": "moprune.space", "LowRankChannelSpace": "moprune.space",
    "evaluate": "moprune.train", "finetune": "moprune.train", "fit": "moprune.train",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - what type checkers and editors see
    from moprune.archive import Evaluation, SearchResult
    from moprune.data import Splits, fetch_fashion_mnist, load_cifar10, load_fashion_mnist, load_mnist, load_mnist_idx
    from moprune.devices import available_devices, resolve_device
    from moprune.evaluation import Evaluator
    from moprune.exceptions import MopruneError, MopruneValueError
    from moprune.exporting import export, export_onnx, load
    from moprune.logging import get_logger, set_verbosity
    from moprune.models import get_model, model_names, pretrained
    from moprune.problem import PruningProblem
    from moprune.race import retrain_within
    from moprune.results import compare, hypervolume, pareto_front, pick, to_frame
    from moprune.retraining import RetrainResult, retrain, retrain_front
    from moprune.searching import search
    from moprune.space import ChannelSpace, LowRankChannelSpace, LowRankSpace, Plan, Space, WeightSpace
    from moprune.train import evaluate, finetune, fit

__all__ = [
    "ChannelSpace",
    "Evaluation",
    "Evaluator",
    "LowRankChannelSpace",
    "LowRankSpace",
    "MopruneError",
    "MopruneValueError",
    "Plan",
    "PruningProblem",
    "RetrainResult",
    "SearchResult",
    "Space",
    "Splits",
    "WeightSpace",
    "__version__",
    "available_devices",
    "compare",
    "evaluate",
    "export",
    "export_onnx",
    "finetune",
    "fetch_fashion_mnist",
    "fit",
    "get_logger",
    "get_model",
    "hypervolume",
    "load",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_idx",
    "model_names",
    "pareto_front",
    "pick",
    "pretrained",
    "resolve_device",
    "retrain",
    "retrain_front",
    "retrain_within",
    "search",
    "set_verbosity",
    "to_frame",
]
