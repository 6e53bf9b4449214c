"""Functions a user points the command line at (``--model tests.cli.own_factories:tiny_net`` and
``--data tests.cli.own_factories:blobs``): a model and a data set of their own."""
import torch
from torch import nn
from torch.utils.data import TensorDataset


def blobs(n: int = 60, classes: int = 3) -> TensorDataset:
    """`n` 3x8x8 images of `classes` classes, each class shifted by its index: learnable in a few steps."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g) + y[:, None, None, None], y)


def split_blobs(n: int = 60):
    """A (train, test) pair."""
    data = blobs(n)
    return TensorDataset(*(t[: n // 2] for t in data.tensors)), TensorDataset(*(t[n // 2:] for t in data.tensors))


def tiny_net(classes: int = 3, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, classes))


def not_a_model():
    return "a string"
