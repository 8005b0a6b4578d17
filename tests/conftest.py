"""Shared test helpers (kept small: each test file builds what it needs)."""

import pytest
import torch
from torch import nn

from moprune.models import get_model

ZOO = ("mnist_cnn", "lenet5", "lenet5_caffe", "vgg_small", "resnet8")

FAST_ZOO = ("lenet5",)
"""The zoo model whole-network checks run on in the fast tests; the others take seconds each and
are marked ``slow`` where a test runs over the zoo (``lenet5`` has convolutions, pooling and the
flatten -> Linear coupling every model has)."""


def zoo_params(names=ZOO):
    """``names`` as pytest parameters, all but :data:`FAST_ZOO` marked ``slow``."""
    return [name if name in FAST_ZOO else pytest.param(name, marks=pytest.mark.slow) for name in names]


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

