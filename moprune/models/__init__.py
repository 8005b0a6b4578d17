"""The model zoo and cached pretrained baselines."""

from moprune.models.baselines import DEFAULT_RECIPE, pretrained, weights_path
from moprune.models.zoo import MODELS, get_model, model_names

__all__ = ["DEFAULT_RECIPE", "MODELS", "get_model", "model_names", "pretrained", "weights_path"]
