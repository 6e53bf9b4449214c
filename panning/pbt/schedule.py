"""Pruning schedules: how many weights stay after each step of an iterative method."""
from __future__ import annotations

import math

from torch import nn

from .. import checks
from ..arena import Arena, Filter, prunable

#: How a kept fraction becomes a count: "round" (this library's default: the last step keeps exactly
#: keep_count(N, s), the count every method targets) or "floor" (int(N * kept), as the Panning and
#: SynFlow authors' code does, float error included; see docs/pbt.md).
ROUNDINGS = ("round", "floor")


def keep_count(numel: int, sparsity: float) -> int:
    """Weights kept at `sparsity`: round(numel * (1 - sparsity)), the one count every method targets."""
    return round(numel * (1.0 - sparsity))


def kept_weights(model: nn.Module, sparsity: float, *, include: Filter = prunable, name: str = "sparsity") -> int:
    """The weights `sparsity` keeps (keep_count) of the prunable weights of `model` that `include` selects; a
    sparsity that keeps none is refused, naming `name`, as sparsity 1 is: a check a command runs before any
    work."""
    numel = Arena(model, include=include, share=False).numel
    return checks.keeps_weights(name, sparsity, keep_count(numel, sparsity), numel)


def exponential(sparsity: float, steps: int) -> list[float]:
    """Kept fraction after each step e = 0 .. steps-1: (1 - sparsity) ** ((e + 1) / steps).

    Every step removes the same fraction of the remaining weights, so early (dense) steps remove many
    weights and late ones few; the last step reaches the target exactly.
    """
    density = 1.0 - sparsity
    return [density ** ((e + 1) / steps) for e in range(steps)]


def scheduled_sparsities(sparsity: float, steps: int) -> list[float]:
    """The sparsity each step of the exponential schedule prunes to: 1 - (1 - sparsity) ** ((e + 1) / steps),
    computed as the float the authors' code compares with its stage bounds (1 - kept fraction)."""
    return [1.0 - kept for kept in exponential(sparsity, steps)]


def exponential_counts(numel: int, sparsity: float, steps: int, rounding: str = "round") -> list[int]:
    """The exponential schedule as kept counts over `numel` weights.

    rounding "round": round(numel * kept), the last count exactly keep_count(numel, sparsity);
    rounding "floor": int(numel * kept) at every step, the last included (the authors' counts).
    """
    kept = exponential(sparsity, steps)
    if rounding == "floor":
        return [math.floor(numel * k) for k in kept]
    counts = [round(numel * k) for k in kept]
    counts[-1] = keep_count(numel, sparsity)
    return counts
