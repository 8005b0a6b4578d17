"""Baselines trained once and cached on disk, keyed by model name, training settings and training data."""

import hashlib
import json
import os
from typing import Any, Dict, Optional, Union

import torch
from torch import nn
from torch.utils.data import TensorDataset

from moprune.data.splits import Splits, cache_dir
from moprune.devices import Device, resolve_device
from moprune.io import atomic_path
from moprune.logging import get_logger
from moprune.models.zoo import get_model
from moprune.train import evaluate, fit
from moprune.validation import check_choice

_log = get_logger("models")

#: Training recipe of the zoo baselines (SGD + Nesterov, cosine decay, on the 50k train split).
DEFAULT_RECIPE = {"epochs": 8, "lr": 0.05, "batch_size": 128, "weight_decay": 5e-4, "seed": 0}

#: The data sets a baseline can be trained on by name (``pretrained(name, data="fashion-mnist")``).
DATA_SETS = ("mnist", "fashion-mnist")

#: Recipe keys beyond :data:`DEFAULT_RECIPE`'s: ``augment`` (``None``, ``"flip"``, ``"flip+crop"`` or ``"crop"``, see
#: :func:`moprune.data.augment.augment_batch`). Left out of the cache key when ``None``.
EXTRA_RECIPE_KEYS = ("augment",)

#: Fashion-MNIST recipes: the default SGD recipe plus left-right flips and +-2 pixel shifts, with epochs
#: sized so that each baseline trains within 20 minutes on one thread of a 2-core CPU.
FASHION_MNIST_RECIPES: Dict[str, Dict[str, Any]] = {
    name: {**DEFAULT_RECIPE, "epochs": epochs, "augment": "flip+crop"}
    for name, epochs in (("mnist_cnn", 12), ("lenet5", 20), ("lenet5_caffe", 20), ("vgg_small", 10),
                         ("resnet8", 15))
}


def baseline_recipe(name: str, data: str = "mnist") -> Dict[str, Any]:
    """The recipe :func:`pretrained` trains ``name`` with on the data set named ``data``.

    Args:
        name: A zoo model name.
        data: One of :data:`DATA_SETS`.

    Returns:
        A new dict: :data:`DEFAULT_RECIPE` for MNIST, :data:`FASHION_MNIST_RECIPES` for Fashion-MNIST.
    """
    check_choice("data", data, DATA_SETS)
    if data == "fashion-mnist":
        return dict(FASHION_MNIST_RECIPES.get(name, {**DEFAULT_RECIPE, "augment": "flip+crop"}))
    return dict(DEFAULT_RECIPE)


def load_data_set(data: str, *, cache: Optional[str] = None) -> Splits:
    """The ``Splits`` of the data set named ``data`` (one of :data:`DATA_SETS`)."""
    check_choice("data", data, DATA_SETS)
    if data == "fashion-mnist":
        from moprune.data.fashion import load_fashion_mnist

        return load_fashion_mnist(cache=cache)
    from moprune.data import load_mnist

    return load_mnist(cache=cache)


FINGERPRINT_SAMPLES = 256
"""How many training items (evenly spaced) :func:`data_fingerprint` hashes."""


def data_fingerprint(dataset: TensorDataset) -> str:
    """A short fingerprint of a ``TensorDataset(images, labels)``: its shapes and a hash of a fixed sample.

    The sample is :data:`FINGERPRINT_SAMPLES` items evenly spaced over the dataset (first and
    last included), so two data sets of the same shape that differ anywhere in those items (or
    in their labels) get different fingerprints, at the cost of hashing a few hundred images.

    Returns:
        16 hex digits.
    """
    images, labels = dataset.tensors[:2]
    n = len(images)
    index = torch.linspace(0, max(n - 1, 0), steps=min(n, FINGERPRINT_SAMPLES)).round().long().unique()
    digest = hashlib.sha256()
    digest.update(repr((tuple(images.shape), str(images.dtype), tuple(labels.shape), str(labels.dtype))).encode())
    digest.update(images[index].contiguous().numpy().tobytes())
    digest.update(labels[index].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def weights_path(name: str, recipe: Dict[str, Any], *, cache: Optional[str] = None,
                 data: Optional[Splits] = None) -> str:
    """Where the weights of ``name`` trained with ``recipe`` on ``data`` are cached.

    Args:
        name: A zoo model name.
        recipe: The full training recipe (see :data:`DEFAULT_RECIPE`).
        cache: Cache folder (default: ``$MOPRUNE_CACHE`` or ``~/.cache/moprune``).
        data: The ``Splits`` trained on (default: :func:`moprune.data.load_mnist`, loaded to
            fingerprint it); the key holds :func:`data_fingerprint` of its training split.
    """
    if data is None:
        from moprune.data import load_mnist

        data = load_mnist(cache=cache)
    recipe = {k: v for k, v in recipe.items() if not (k in EXTRA_RECIPE_KEYS and v is None)}  # MNIST keys unchanged
    key = json.dumps({"model": name, **recipe, "train_data": data_fingerprint(data.train)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return os.path.join(cache or cache_dir(), "weights", f"{name}-{digest}.pt")


_CHECKSUM = ".sha256"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_cached(name, path):
    """The cached baseline in ``path``, checked against its ``.sha256`` (when there is one).

    Raises:
        DataError: the file is truncated, empty, altered or not the weights of ``name``; the
            message names it and says that deleting it makes the next call train it again.
    """
    import pickle
    import zipfile

    from moprune.exceptions import DataError

    retrain = "delete it and the next run trains the baseline again (a few minutes)"
    checksum = path + _CHECKSUM
    if os.path.isfile(checksum):
        with open(checksum, encoding="ascii", errors="replace") as f:
            expected = f.read().strip()
        if _sha256(path) != expected:
            raise DataError(f"the cached baseline weights {path} are corrupt (their SHA-256 differs from the one "
                            f"saved in {os.path.basename(checksum)}); {retrain}")
    model = get_model(name)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError,
            TypeError, AttributeError, IndexError, UnicodeDecodeError) as exc:
        raise DataError(f"the cached baseline weights {path} are corrupt or truncated ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); {retrain}") from None
    return model.eval()


def pretrained(name: str, *, data: Union[None, str, Splits] = None, cache: Optional[str] = None,
               progress: bool = True, device: Device = "auto", **recipe: Any) -> nn.Module:
    """Return the zoo model ``name`` trained on the training split, in eval mode.

    The first call trains it (a few minutes on 2 CPU cores for ``mnist_cnn``) and saves the
    weights atomically; later calls with the same name, recipe and training data load them
    (``torch.load(weights_only=True)``). The cache key holds a fingerprint of the training data
    (:func:`data_fingerprint`), so a baseline trained on one data set is never reused for another:
    each data set has its own cached baseline.

    Args:
        name: A zoo model name (see :func:`moprune.models.model_names`).
        data: ``Splits`` to train on, or a name in :data:`DATA_SETS` (``"mnist"``, the default,
            or ``"fashion-mnist"``): the named data set is loaded and its recipe
            (:func:`baseline_recipe`) is the starting point that ``recipe`` overrides.
        cache: Cache folder (default: ``$MOPRUNE_CACHE`` or ``~/.cache/moprune``).
        progress: Show training progress bars.
        device: Where to train it when it is not cached (see
            :func:`moprune.devices.resolve_device`); the model is handed back on the CPU.
        **recipe: Overrides of the recipe (``epochs``, ``lr``, ``batch_size``, ``weight_decay``,
            ``seed``, ``augment``).
    """
    allowed = set(DEFAULT_RECIPE) | set(EXTRA_RECIPE_KEYS)
    unknown = set(recipe) - allowed
    if unknown:
        raise TypeError(f"pretrained() got unknown recipe keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    device = resolve_device(device)
    if data is None or isinstance(data, str):
        name_of_data = "mnist" if data is None else data
        recipe = {**baseline_recipe(name, name_of_data), **recipe}
        data = load_data_set(name_of_data, cache=cache)
    else:
        recipe = {**DEFAULT_RECIPE, **recipe}
    path = weights_path(name, recipe, cache=cache, data=data)
    if os.path.isfile(path):
        return _load_cached(name, path)
    generator = torch.Generator().manual_seed(recipe["seed"])
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching global state
        torch.manual_seed(recipe["seed"])
        model = get_model(name)
    _log.info("training %s baseline with %s", name, recipe)
    fit(model, data.train, epochs=recipe["epochs"], lr=recipe["lr"], batch_size=recipe["batch_size"],
        weight_decay=recipe["weight_decay"], generator=generator, progress=progress, desc=name,
        augment=recipe.get("augment"), device=device)
    model.cpu()
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    with atomic_path(path + _CHECKSUM) as tmp:  # torch.load does not notice a flipped bit in a tensor
        with open(tmp, "w", encoding="ascii") as f:
            f.write(_sha256(path) + "\n")
    _log.info("saved %s baseline (val accuracy %.4f) to %s", name, evaluate(model, data.val), path)
    return model.eval()
