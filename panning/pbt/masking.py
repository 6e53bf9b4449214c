"""Masks from scores: one global top-k over the arena."""
from __future__ import annotations

import warnings

import torch

from .. import ops
from ..arena import Arena


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


def warn_if_tied(arena: Arena, scores: torch.Tensor) -> None:
    """Warn when every weight of a layer has the same score (e.g. all zero: a zero-initialized classifier, or a
    layer behind a zero-initialized BatchNorm): the top-k then keeps that layer's first weights in layer order,
    a mask that says nothing about the weights. One segmented min/max over the dense network's scores."""
    sizes = arena.sizes.to(scores.device)
    low = torch.segment_reduce(scores, "min", lengths=sizes)
    high = torch.segment_reduce(scores, "max", lengths=sizes)
    tied = [name for name, size, flat in zip(arena.names, arena.sizes.tolist(), (low == high).tolist())
            if flat and size > 1]
    if tied:
        warnings.warn(f"scores: every weight of {tied} scores the same (e.g. all zero, a zero-initialized layer); "
                      "their mask keeps the first weights in layer order, not the most salient ones", stacklevel=2)
