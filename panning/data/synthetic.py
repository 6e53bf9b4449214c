"""Synthetic Gaussian class clusters: any size, no files, instant. Meant for tests and smoke runs."""
from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset

from .bundle import DataBundle


def load_synthetic(
    seed: int = 0,
    *,
    num_classes: int = 4,
    input_shape: tuple[int, ...] = (1, 16),
    n_train: int = 256,
    n_test: int = 128,
    noise: float = 1.0,
) -> DataBundle:
    """Each class is a Gaussian blob (std ``noise``) around its own random center (std 1 per feature).

    Labels cycle through the classes, so every split holds ``n // num_classes`` or one more sample per class.
    The same seed gives the same data. The sizes (``num_classes``, ``n_train``, ``n_test``, those of
    ``input_shape``) are positive ints and ``noise`` a finite number >= 0; they are used as given.
    """
    input_shape = tuple(int(d) for d in input_shape)
    g = torch.Generator().manual_seed(seed)
    features = math.prod(input_shape)
    centers = torch.randn(num_classes, features, generator=g)

    def split(n: int) -> TensorDataset:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = centers[y] + noise * torch.randn(n, features, generator=g)
        return TensorDataset(x.reshape(n, *input_shape), y)

    return DataBundle(
        name="synthetic",
        train=split(n_train),
        test=split(n_test),
        input_shape=input_shape,
        num_classes=num_classes,
    )
