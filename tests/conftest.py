"""Shared test helpers (kept small: each test file builds what it needs)."""

import signal

import torch
from torch import nn

from moprune.models import get_model

ZOO = ("mnist_cnn", "lenet5", "lenet5_caffe", "vgg_small", "resnet8")


def pytest_configure(config):
    """Tests run torch on one thread.

    Their models are tiny, and on a shared 2-core CPU a second thread makes them several times
    slower; no result depends on the thread count (the evaluator's ``num_threads`` is tested).
    """
    torch.set_num_threads(1)
    # Some tests press Ctrl-C on a child process. A test run started in the background of a
    # non-interactive shell (`make test &`) inherits SIGINT ignored, and so would every child:
    # Python then never raises KeyboardInterrupt. A handler here is reset to the default on exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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



def evaluator_settings(monkeypatch, config):
    """The keyword arguments the command line's ``build_problem`` passes to ``Evaluator`` for ``config``.

    Nothing is built: the evaluator, problem and space are replaced by recorders.
    """
    from moprune.cli import config as cfg

    seen = {}

    class Recorder:
        def __init__(self, data, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr("moprune.evaluation.Evaluator", Recorder)
    monkeypatch.setattr("moprune.problem.PruningProblem", lambda space, evaluator, **kwargs: evaluator)
    monkeypatch.setattr(cfg, "build_space", lambda config, model, data: None)
    cfg.build_problem(config, None, type("Data", (), {"val": [0], "train": [0]})())
    return seen
