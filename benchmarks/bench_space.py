"""How much does the space cost next to evaluating a candidate? (issue 3's performance targets)

For ``mnist_cnn`` and one half-width candidate: decode + materialize + cost against evaluating it
on 2,000 MNIST-shaped images (batch 250), target ratio <= 0.05; ``cost()`` of a population of 100,
target <= 10 ms; and the naive alternative (deepcopy + new dependency graph + Torch-Pruning's
``group.prune()`` per candidate) for comparison.

Run: ``.venv/bin/python benchmarks/bench_space.py`` (prints its figures; the committed output is
``benchmarks/results/bench_space.txt``).
"""

import copy
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch_pruning as tp

from moprune.models import get_model
from moprune.space import ChannelSpace, WeightSpace

MINIMA = {}


def timed(fn, repeat, label=None):
    """Median wall time of ``repeat`` calls (the minimum is kept in ``MINIMA[label]``)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if label:
        MINIMA[label] = min(times)
    return statistics.median(times)


def evaluate(model, images, labels, batch_size=250):
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            correct += int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / len(images)


def naive_materialize(model, plan):
    pruned = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=torch.zeros(1, 1, 28, 28))
    for group, kept in plan.kept:
        root = pruned.get_submodule(group)
        fn = tp.prune_conv_out_channels if isinstance(root, torch.nn.Conv2d) else tp.prune_linear_out_channels
        removed = sorted(set(range(graph.get_out_channels(root))) - set(kept))
        if removed:
            graph.get_pruning_group(root, fn, removed).prune()
    return pruned.eval()


def main():
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    model = get_model("mnist_cnn").eval()
    images = torch.rand(2000, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (2000,), generator=g)

    t0 = time.perf_counter()
    space = ChannelSpace(model, encoding="binary")
    build = time.perf_counter() - t0
    x = rng.random(space.n_var) < 0.5
    plan = space.decode(x)
    pruned = space.materialize(x)

    def one_candidate():
        space.decode(x)
        space.materialize(x)
        space.cost(x)

    t_space = timed(one_candidate, 30, "space")
    t_decode = timed(lambda: space.decode(x), 30)
    t_mat = timed(lambda: space.materialize(x), 30, "mat")
    t_cost1 = timed(lambda: space.cost(x), 30)
    evaluate(pruned, images, labels)  # warm-up
    t_eval = timed(lambda: evaluate(pruned, images, labels), 5, "eval")
    t_full = timed(lambda: evaluate(model, images, labels), 3)
    pop = rng.random((100, space.n_var)) < rng.random((100, 1))
    t_pop = timed(lambda: space.cost(pop), 50, "pop")
    t_naive = timed(lambda: naive_materialize(model, plan), 10, "naive")
    assert all(torch.equal(a, b) for a, b in zip(naive_materialize(model, plan).state_dict().values(),
                                                  pruned.state_dict().values()))

    ratio = ChannelSpace(model, encoding="ratio")
    xr = rng.random(ratio.n_var)
    t_ratio = timed(lambda: (ratio.decode(xr), ratio.materialize(xr), ratio.cost(xr)), 30)
    t_ratio_pop = timed(lambda: ratio.cost(rng.random((100, ratio.n_var))), 50)
    ws = WeightSpace(model, encoding="ratio")
    xw = rng.random(ws.n_var)
    t_weights = timed(lambda: (ws.decode(xw), ws.materialize(xw), ws.cost(xw)), 10)

    c = space.cost(x)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end "
          "(when > 2, other jobs were sharing the 2 cores)")
    print(f"mnist_cnn ChannelSpace(binary): {space.n_var} genes, groups {dict(zip(space.group_names, space.group_sizes))}, "
          f"built in {build * 1000:.0f} ms")
    print(f"candidate: kept {plan.summary}, macs_ratio {c['macs_ratio'][0]:.3f}, params_ratio {c['params_ratio'][0]:.3f}")
    print(f"decode {t_decode * 1000:.2f} ms + materialize {t_mat * 1000:.2f} ms + cost {t_cost1 * 1000:.2f} ms")
    print(f"decode+materialize+cost of one candidate: {t_space * 1000:.2f} ms")
    print(f"evaluation of that candidate on 2,000 images (batch 250): {t_eval * 1000:.1f} ms "
          f"(unpruned model: {t_full * 1000:.1f} ms)")
    print(f"ratio space/evaluation: {t_space / t_eval:.4f} (target <= 0.05) -> {'OK' if t_space / t_eval <= 0.05 else 'MISSED'}")
    print(f"cost() of a population of 100: {t_pop * 1000:.3f} ms (target <= 10 ms) -> {'OK' if t_pop <= 0.010 else 'MISSED'}")
    print(f"baseline deepcopy + new dependency graph + group.prune(): {t_naive * 1000:.1f} ms per candidate "
          f"({t_naive / t_mat:.1f}x our materialize; same weights: yes)")
    print(f"minima (least disturbed by other jobs): space {MINIMA['space'] * 1000:.2f} ms, evaluation "
          f"{MINIMA['eval'] * 1000:.1f} ms, ratio {MINIMA['space'] / MINIMA['eval']:.4f}; materialize "
          f"{MINIMA['mat'] * 1000:.2f} ms vs baseline {MINIMA['naive'] * 1000:.1f} ms; population cost "
          f"{MINIMA['pop'] * 1000:.3f} ms")
    print(f"ChannelSpace(ratio): decode+materialize+cost {t_ratio * 1000:.2f} ms; cost() of 100: {t_ratio_pop * 1000:.3f} ms")
    print(f"WeightSpace(ratio): decode+materialize+cost {t_weights * 1000:.2f} ms")


if __name__ == "__main__":
    main()
