"""Masks from scores: one global top-k over the arena."""
from __future__ import annotations

import torch

from .. import ops


def global_mask(scores: torch.Tensor, k: int, *, within: torch.Tensor | None = None) -> torch.Tensor:
    """Flat bool mask keeping the `k` largest scores over the whole arena (exactly k; ties to the lower index).

    With `within` (a flat bool mask), only weights it keeps are candidates: the others are excluded
    before the single `panning.ops.topk_mask` call, so an iterative method can keep pruned weights pruned.
    `k` must not exceed the candidates then.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        raise ValueError("scores: expected a flat (1-D) tensor over the arena")
    if within is not None:
        if not isinstance(within, torch.Tensor) or within.dtype != torch.bool or within.shape != scores.shape:
            raise ValueError(f"within: expected a bool tensor of shape {tuple(scores.shape)}")
        if k > int(within.sum()):
            raise ValueError(f"k: {k} exceeds the {int(within.sum())} weights `within` keeps")
        scores = scores.masked_fill(~within, float("-inf"))
    return ops.topk_mask(scores, k)
