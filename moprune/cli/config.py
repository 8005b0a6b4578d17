"""Settings of a ``moprune search`` run: defaults, TOML files, validation, and building the objects.

A run's settings are one flat dict (saved as the run's ``config.json``). They come from, in
increasing priority: :data:`DEFAULTS`, a TOML file (``--config``) and the command line. Every
string naming something (model, space, algorithm, data) is resolved here, at the edge.
"""

import importlib.util
import inspect
import os
import sys

from moprune.exceptions import MopruneError, MopruneValueError, invalid_value
from moprune.validation import check_int, check_real, conflict

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - older Pythons get tomli from setup.cfg
    import tomli as tomllib

SPACES = ("channels", "weights")
ENCODINGS = {"channels": ("binary", "ratio"), "weights": ("ratio", "mask")}
DATA_CHOICES = ("mnist", "fashion-mnist", "fashion-mnist:FOLDER", "mnist-idx:FOLDER", "cifar10:FOLDER")

DEFAULTS = {
    "model": "mnist_cnn",
    "weights": None,
    "data": "mnist",
    "baseline_epochs": None,
    "space": "channels",
    "encoding": None,
    "layers": None,
    "objectives": ["error", "macs"],
    "max_accuracy_drop": None,
    "algorithm": "focused",
    "algorithm_options": {},
    "pop_size": 20,
    "generations": None,
    "evaluations": None,
    "seed": 0,
    "val_samples": 2000,
    "confirm_samples": "auto",
    "finetune_steps": None,
    "train_samples": None,
    "batch_size": 250,
    "threads": None,
    "workers": None,
    "device": "auto",
    "backend": "local",
    "ray_address": None,
}
"""Every setting of a search and its default (``generations`` defaults to 30 when neither
``generations`` nor ``evaluations`` is set)."""

MACHINE_SETTINGS = ("workers", "device", "backend", "ray_address")
"""Settings that say where a run's candidates are evaluated, not what the run is: they are not
stored in the run's ``config.json``, and a run may be resumed with other values."""

DEFAULT_GENERATIONS = 30

_INTS = {"pop_size": 2, "generations": 1, "evaluations": 1, "seed": 0, "val_samples": 1, "finetune_steps": 0,
         "train_samples": 1, "batch_size": 1, "threads": 1, "baseline_epochs": 1, "workers": 1}
_OPTIONAL = {"weights", "baseline_epochs", "encoding", "layers", "max_accuracy_drop", "generations",
             "evaluations", "finetune_steps", "train_samples", "threads", "workers"}


LATER_SETTINGS = ("confirm_samples",)
"""Settings added after run directories were first written: a run stores them only when they differ
from their default, so that a run written before them (its ``config.json`` lacks the key) still
resumes, with the default."""


def run_config(config):
    """``config`` without the :data:`MACHINE_SETTINGS`: what a run directory stores and compares."""
    return {k: v for k, v in config.items()
            if k not in MACHINE_SETTINGS and not (k in LATER_SETTINGS and v == DEFAULTS[k])}


def machine_settings(config):
    """The :data:`MACHINE_SETTINGS` of ``config`` (defaults where absent)."""
    return {k: config.get(k, DEFAULTS[k]) for k in MACHINE_SETTINGS}


# ----------------------------------------------------------------------------- reading
def read_toml(path):
    """The settings in TOML file ``path`` (dashes in keys read as underscores).

    Raises:
        MopruneError: unreadable file, invalid TOML or an unknown key (named, with the known ones).
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise MopruneError(f"cannot read the config file {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise MopruneError(f"the config file {path!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise MopruneError(f"the config file {path!r} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                           f"offset {exc.start}); TOML files must be UTF-8") from None
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in DEFAULTS:
            raise MopruneValueError(f"unknown key {key!r} in the config file {path!r}; known keys: "
                                    f"{', '.join(sorted(DEFAULTS))}")
        out[name] = value
    return out


def resolve(given, *, file_settings=None):
    """Merge defaults, file settings and command-line settings, then validate.

    Args:
        given: Settings from the command line (only those the user gave).
        file_settings: Settings from a TOML file.

    Returns:
        The resolved settings (paths made absolute).

    Raises:
        MopruneValueError: an invalid or unknown setting (named, with what is allowed).
    """
    config = dict(DEFAULTS)
    for source in (file_settings or {}), given:
        for key, value in source.items():
            if key not in DEFAULTS:
                raise MopruneValueError(f"unknown setting {key!r}; known settings: {', '.join(sorted(DEFAULTS))}")
            config[key] = value
    if config["generations"] is None and config["evaluations"] is None:
        config["generations"] = DEFAULT_GENERATIONS
    return validate(config)


def validate(config):
    """Check every setting of a resolved config; return it with absolute paths.

    Raises:
        MopruneValueError: the first invalid setting, named, with what is allowed and what came.
    """
    from moprune.algorithms import ALGORITHMS
    from moprune.devices import resolve_device
    from moprune.models import model_names
    from moprune.problem import OBJECTIVES

    config = dict(config)
    for key, minimum in _INTS.items():
        check_int(key, config[key], low=minimum, allow_none=key in _OPTIONAL)
    config["confirm_samples"] = _check_confirm_samples(config["confirm_samples"])
    if not isinstance(config["device"], str):
        raise invalid_value("device", "a device name ('auto', 'cpu', 'cuda', 'cuda:N', 'mps')", config["device"])
    resolve_device(config["device"], "device")  # a device this machine has
    _check_backend(config)
    if config["generations"] is not None and config["evaluations"] is not None:
        raise conflict(("generations", "evaluations"), "at most one of them set",
                       (config["generations"], config["evaluations"]))
    model = config["model"]
    if not isinstance(model, str):
        raise invalid_value("model", "a zoo model name or FILE.py:FACTORY", model)
    if ":" in model and model.rsplit(":", 1)[0].endswith(".py"):
        file, factory = model.rsplit(":", 1)
        if not os.path.isfile(file):
            raise invalid_value("model", "FILE.py:FACTORY with an existing file", model)
        config["model"] = f"{os.path.abspath(file)}:{factory}"
    elif model not in model_names():
        raise MopruneValueError(f"unknown model {model!r}; choose one of: {', '.join(model_names())}, "
                                "or give FILE.py:FACTORY")
    if config["weights"] is not None:
        if not isinstance(config["weights"], str) or not os.path.isfile(config["weights"]):
            raise invalid_value("weights", "the path of an existing state_dict file", config["weights"])
        config["weights"] = os.path.abspath(config["weights"])
    config["data"] = _check_data(config["data"])
    if config["space"] not in SPACES:
        raise MopruneValueError(f"unknown space {config['space']!r}; choose one of: {', '.join(SPACES)}")
    encodings = ENCODINGS[config["space"]]
    if config["encoding"] is not None and config["encoding"] not in encodings:
        raise MopruneValueError(f"unknown encoding {config['encoding']!r} for space {config['space']!r}; "
                                f"choose one of: {', '.join(encodings)}")
    layers = config["layers"]
    if isinstance(layers, str):
        layers = config["layers"] = [s for s in layers.split(",") if s]
    if layers is not None and (not isinstance(layers, list) or not all(isinstance(s, str) for s in layers)):
        raise invalid_value("layers", "a list of layer names", layers)
    objectives = config["objectives"]
    if isinstance(objectives, str):
        objectives = config["objectives"] = [s for s in objectives.split(",") if s]
    if not isinstance(objectives, list) or not objectives or any(o not in OBJECTIVES for o in objectives):
        raise MopruneValueError(f"objectives must be names among: {', '.join(OBJECTIVES)}; got {objectives!r}")
    drop = config["max_accuracy_drop"]
    check_real("max_accuracy_drop", drop, low=0, high=100, allow_none=True, unit="accuracy points")
    if config["algorithm"] not in ALGORITHMS:
        raise MopruneValueError(f"unknown algorithm {config['algorithm']!r}; choose one of: "
                                f"{', '.join(ALGORITHMS.names())}")
    options = config["algorithm_options"]
    if not isinstance(options, dict):
        raise invalid_value("algorithm_options", "a table of option = value", options)
    allowed = algorithm_option_names(config["algorithm"])
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise MopruneValueError(f"unknown option(s) {unknown} of algorithm {config['algorithm']!r}; "
                                f"choose among: {', '.join(allowed)}")
    return config


def _check_confirm_samples(value):
    """``confirm_samples``: ``"auto"``, ``"none"`` or a number of images (a numeral string from the command line)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value in ("auto", "none"):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_value("confirm_samples", "'auto', 'none' or a number of validation images >= 1", value)
    return value


def _check_backend(config):
    """``backend`` and ``ray_address``: where the workers run (Ray only when installed, and with workers)."""
    from moprune.evaluation.evaluator import BACKENDS
    from moprune.evaluation.ray_pool import INSTALL, ray_installed

    backend, address = config["backend"], config["ray_address"]
    if backend not in BACKENDS:
        raise invalid_value("backend", f"one of {list(BACKENDS)}", backend)
    if address is not None and (not isinstance(address, str) or not address):
        raise invalid_value("ray_address", "'auto' or 'ray://host:port'", address)
    if backend == "local":
        if address is not None:
            raise conflict(("backend",), "'ray' when ray_address is given", backend)
        return
    if config["workers"] is None:
        raise conflict(("workers",), "a number of Ray actors with backend 'ray'", None)
    if not ray_installed():
        raise MopruneError(f"backend 'ray' needs Ray, which is not installed here; install it with: {INSTALL}")


def algorithm_option_names(name):
    """The keyword options of a registered algorithm's factory (``problem`` and ``pop_size`` aside)."""
    from moprune.searching import algorithm_options

    return algorithm_options(name)


def _check_data(spec):
    if spec in ("mnist", "fashion-mnist"):
        return spec
    if isinstance(spec, str) and ":" in spec:
        kind, folder = spec.split(":", 1)
        if kind in ("mnist-idx", "cifar10", "fashion-mnist") and folder:
            if not os.path.isdir(folder):
                raise invalid_value("data", f"{kind}:FOLDER with an existing folder", spec)
            return f"{kind}:{os.path.abspath(folder)}"
    raise MopruneValueError(f"unknown data {spec!r}; choose one of: {', '.join(DATA_CHOICES)}")


def parse_option(text):
    """``KEY=VALUE`` of ``--algo-option`` as ``(key, value)``, the value read as a TOML value
    (``0.1``, ``true``, ``"uniform"``; a bare word is a string)."""
    if "=" not in text:
        raise invalid_value("--algo-option", "KEY=VALUE", text)
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


# ----------------------------------------------------------------------------- building
def check_data(spec):
    """A data setting checked (one of :data:`DATA_CHOICES`), with its folder made absolute."""
    return _check_data(spec)


def data_set(spec):
    """The data set whose baseline recipe a data setting trains with: ``"fashion-mnist"`` for
    ``fashion-mnist[:FOLDER]``, else ``"mnist"`` (see :func:`moprune.models.baselines.baseline_recipe`)."""
    return "fashion-mnist" if spec.split(":", 1)[0] == "fashion-mnist" else "mnist"


def load_data(spec):
    """The :class:`moprune.Splits` named by a data setting."""
    from moprune.data import load_cifar10, load_fashion_mnist, load_mnist, load_mnist_idx

    if spec == "mnist":
        return load_mnist()
    if spec == "fashion-mnist":
        return load_fashion_mnist()
    kind, folder = spec.split(":", 1)
    if kind == "fashion-mnist":
        return load_fashion_mnist(folder=folder)
    return load_mnist_idx(folder) if kind == "mnist-idx" else load_cifar10(folder)


def _load_factory(spec):
    file, factory = spec.rsplit(":", 1)
    name = f"moprune_user_model_{abs(hash(file))}"
    module = sys.modules.get(name)
    if module is None:
        try:
            loader = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise MopruneError(f"cannot import the model file {file!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise MopruneValueError(f"model file {file!r} has no callable {factory!r}")
    try:
        required = [name for name, p in inspect.signature(fn).parameters.items()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):  # no signature to read (a builtin): calling it will tell
        required = []
    if required:
        raise MopruneValueError(f"the model factory {factory!r} in {file!r} must be callable without arguments "
                                f"(it builds the unpruned model); it needs {required}")
    return fn


def _call_factory(spec):
    """The model the user's ``FILE.py:FACTORY`` builds."""
    from torch import nn

    fn = _load_factory(spec)
    try:
        model = fn()
    except Exception as exc:
        raise MopruneError(f"the model factory {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise MopruneValueError(f"the factory {spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _load_weights(path, model, spec):
    """Load the state_dict file ``path`` into ``model`` (``torch.load(weights_only=True)``)."""
    import pickle
    import zipfile

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, ImportError, IndexError, TypeError, UnicodeDecodeError, OSError) as exc:
        raise MopruneError(f"--weights {path!r} is not a PyTorch state_dict file (one written by "
                           f"torch.save(model.state_dict(), path)): {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise MopruneError(f"--weights {path!r} holds a {type(state).__name__}, not a state_dict (a dict of "
                           "parameter names to tensors, as torch.save(model.state_dict(), path) writes)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise MopruneError(f"the weights {path!r} do not fit the model {spec}: {exc}") from None


def load_model(config, data, *, progress=False):
    """The base model of a run, in eval mode: a zoo baseline (cached), or a user factory, with the
    ``weights`` file loaded when given."""
    from moprune.models import get_model, pretrained
    from moprune.models.baselines import baseline_recipe

    spec = config["model"]
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        model = _call_factory(spec)
    elif config["weights"] is None:
        recipe = baseline_recipe(spec, data_set(config["data"]))  # each data set has its own baseline
        recipe["epochs"] = config["baseline_epochs"] or recipe["epochs"]
        return pretrained(spec, data=data, progress=progress, **recipe)
    else:
        model = get_model(spec)
    if config["weights"] is not None:
        _load_weights(config["weights"], model, spec)
    return model.eval()


def build_space(config, model, data):
    """The run's space over ``model`` (example inputs of the data's shape)."""
    import torch

    from moprune.space import ChannelSpace, WeightSpace

    example = torch.zeros(1, *data.val.tensors[0].shape[1:])
    kwargs = {"layers": config["layers"]}
    if config["encoding"] is not None:
        kwargs["encoding"] = config["encoding"]
    cls = ChannelSpace if config["space"] == "channels" else WeightSpace
    return cls(model, example, **kwargs)


def build_problem(config, model, data):
    """The :class:`moprune.PruningProblem` of a run (space, evaluator, objectives, constraint)."""
    from moprune.evaluation import Evaluator
    from moprune.problem import PruningProblem

    space = build_space(config, model, data)
    n_val = min(config["val_samples"], len(data.val))
    n_train = None if config["train_samples"] is None else min(config["train_samples"], len(data.train))
    confirm = config["confirm_samples"]
    evaluator = Evaluator(data.val, n_samples=n_val, confirm_samples=None if confirm == "none" else confirm,
                          batch_size=config["batch_size"],
                          finetune=_finetune_setting(config["finetune_steps"]), train_data=data.train,
                          n_train_samples=n_train, seed=config["seed"], num_threads=config["threads"],
                          device=config["device"], workers=config["workers"], backend=config["backend"],
                          address=config["ray_address"])
    return PruningProblem(space, evaluator, objectives=tuple(config["objectives"]),
                          max_accuracy_drop=config["max_accuracy_drop"])


def _finetune_setting(steps):
    """The Evaluator's ``finetune`` of a run: ``None`` (unset) is its default, 0 none."""
    return "auto" if steps is None else (steps or None)


def search_budget(config):
    """``{"n_gen": ...}`` or ``{"n_evals": ...}`` of a config."""
    if config["evaluations"] is not None:
        return {"n_evals": config["evaluations"]}
    return {"n_gen": config["generations"]}
