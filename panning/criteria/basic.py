"""Data-free baselines: magnitude and random scores."""
from __future__ import annotations

import torch

from ..arena import Arena
from . import scores


def magnitude(arena: Arena) -> torch.Tensor:
    """|w| over the arena: keep the largest weights."""
    return scores.magnitude(arena)


def random(arena: Arena, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent uniform scores in [0, 1): a uniformly random mask of every size.

    Drawn on the CPU from `generator` (then moved), so a seed gives the same mask on every device.
    """
    return scores.random(arena, generator)


__all__ = ["magnitude", "random"]
