"""The model zoo and cached pretrained baselines."""

from moprune.models.baselines import (
    DATA_SETS,
    DEFAULT_RECIPE,
    FASHION_MNIST_RECIPES,
    baseline_recipe,
    pretrained,
    weights_path,
)
from moprune.models.zoo import MODELS, get_model, model_names

__all__ = ["DATA_SETS", "DEFAULT_RECIPE", "FASHION_MNIST_RECIPES", "MODELS", "baseline_recipe", "get_model",
           "model_names", "pretrained", "weights_path"]
