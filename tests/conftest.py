"""Shared test helpers (kept small: each test file builds what it needs)."""

import pytest
import torch
from torch import nn

from moprune.models import get_model

ZOO = ("mnist_cnn", "lenet5", "lenet5_caffe", "vgg_small", "resnet8")

LARGE_ZOO = ("mnist_cnn", "vgg_small", "resnet8")
"""Zoo models whose whole-network checks take seconds each: ``slow`` where a test runs over the zoo
(``lenet5`` and ``lenet5_caffe`` cover the same code paths in the fast tests)."""


def zoo_params(names=ZOO):
    """``names`` as pytest parameters, the :data:`LARGE_ZOO` ones marked ``slow``."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in LARGE_ZOO else name for name in names]


def randomized_zoo_model(name, seed=0):
    """A zoo model with random weights and random BatchNorm statistics, in eval mode.

    Random running statistics and affine parameters make BatchNorm's shift visible, so tests
    comparing pruned and zeroed models cannot pass by accident.
    """
    with torch.random.fork_rng():  # do not disturb the global RNG of other tests
        torch.manual_seed(seed)
        model = get_model(name)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()

