"""Data-free baselines: magnitude and random scores."""
from __future__ import annotations

import torch

from .. import checks
from ..arena import Arena


def magnitude(arena: Arena) -> torch.Tensor:
    """|w| over the arena: keep the largest weights."""
    checks.instance("arena", arena, Arena, "a panning.arena.Arena")
    return arena.weights.detach().abs()


def random(arena: Arena, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent uniform scores in [0, 1): a uniformly random mask of every size.

    Drawn on the CPU from `generator` (then moved), so a seed gives the same mask on every device.
    """
    checks.instance("arena", arena, Arena, "a panning.arena.Arena")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    scores = torch.rand(arena.numel, generator=generator, dtype=arena.weights.dtype)
    return scores.to(arena.device)


__all__ = ["magnitude", "random"]
