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
    if within is not None:
        if k > int(within.sum()):
            raise ValueError(f"k: {k} exceeds the {int(within.sum())} weights `within` keeps")
        scores = scores.masked_fill(~within, float("-inf"))
    return ops.topk_mask(scores, k)
