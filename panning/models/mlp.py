"""Multi-layer perceptron (the MNIST-1D baseline: two hidden layers of 100 units with ReLU)."""
from __future__ import annotations

from torch import nn

from .common import flat_size, scaled


class MLP(nn.Sequential):
    """Flatten -> [Linear -> ReLU] x len(hidden) -> Linear. Accepts any input shape."""

    def __init__(self, input_shape, num_classes: int, hidden: tuple[int, ...] = (100, 100), width: float = 1.0):
        layers: list[nn.Module] = [nn.Flatten()]
        features = flat_size(input_shape)
        for h in hidden:
            layers += [nn.Linear(features, scaled(h, width)), nn.ReLU(inplace=True)]
            features = scaled(h, width)
        layers.append(nn.Linear(features, num_classes))
        super().__init__(*layers)
