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

from moprune.archive import Evaluation, SearchResult
from moprune.data import Splits, load_cifar10, load_mnist, load_mnist_idx
from moprune.evaluation import Evaluator
from moprune.exceptions import MopruneError, MopruneValueError
from moprune.exporting import export, export_onnx, load
from moprune.logging import get_logger, set_verbosity
from moprune.models import get_model, model_names, pretrained
from moprune.problem import PruningProblem
from moprune.results import compare, hypervolume, pareto_front, pick, to_frame
from moprune.retraining import RetrainResult, retrain
from moprune.searching import search
from moprune.space import ChannelSpace, Plan, Space, WeightSpace
from moprune.train import evaluate, finetune, fit
from moprune.version import __version__

__all__ = [
    "ChannelSpace",
    "Evaluation",
    "Evaluator",
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
    "compare",
    "evaluate",
    "export",
    "export_onnx",
    "finetune",
    "fit",
    "get_logger",
    "get_model",
    "hypervolume",
    "load",
    "load_cifar10",
    "load_mnist",
    "load_mnist_idx",
    "model_names",
    "pareto_front",
    "pick",
    "pretrained",
    "retrain",
    "search",
    "set_verbosity",
    "to_frame",
]
