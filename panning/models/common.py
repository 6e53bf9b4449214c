"""Helpers shared by the model definitions: width scaling, shape checks, initialization."""
from __future__ import annotations

import math

from torch import nn


def scaled(channels: int, width: float) -> int:
    """``channels`` scaled by ``width``, rounded, at least 1."""
    return max(1, round(channels * width))


def check_input_shape(input_shape, dims: int | None, model: str) -> tuple[int, ...]:
    """``input_shape`` as a non-empty tuple of positive ints (``dims`` of them unless None; without the batch
    dimension), else ValueError."""
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1 or (dims is not None and len(shape) != dims):
        layout = {None: "positive sizes", 1: "(features,)", 2: "(channels, length)",
                  3: "(channels, height, width)"}[dims]
        raise ValueError(f"input_shape for {model!r} must be {layout}, got {tuple(input_shape)}")
    return shape


def flat_size(input_shape) -> int:
    return math.prod(input_shape)


def kaiming_init(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal init for conv and linear weights (fan-in, ReLU gain), zero biases, BatchNorm at
    identity. Applied after construction so every model starts from the same, documented distribution."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
