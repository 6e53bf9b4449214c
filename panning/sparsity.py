"""Sparsity arithmetic: kept counts, the exponential schedule, per-layer budgets and the global mask.

Pruning before training (panning.pbt) and the lottery-jackpot search (panning.jackpot) both count here.

Kept counts have one rounding vocabulary, ROUNDINGS:
- "nearest" (the default): the kept count is round(N * (1 - sparsity)), halves to even;
- "floor": int(N * (1 - sparsity)), float error included, as the Panning, SynFlow and Lottery Jackpots
  authors' code counts (N = 100, s = 0.9 keeps 9: 100 * 0.09999999999999998). A per-layer budget under
  "floor" also floors what each layer prunes, as the jackpot authors' code does (see :func:`layer_budgets`).

The exponential schedule keeps (1 - sparsity) ** ((e + 1) / steps) of the weights after step e: every step
removes the same fraction of the remaining weights and the last step reaches the target.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import adapter, checks, ops
from .adapter import Filter, prunable
from .arena import Arena

ROUNDINGS = ("nearest", "floor")
#: Per-layer budgets: "global" (one magnitude threshold over all layers) or "uniform" (the same kept fraction
#: in every layer).
BUDGETS = ("global", "uniform")


def _count(amount: float, rounding: str) -> int:
    return round(amount) if rounding == "nearest" else math.floor(amount)


def keep_count(numel: int, sparsity: float, rounding: str = "nearest") -> int:
    """Weights kept of `numel` at `sparsity`: round(numel * (1 - sparsity)), or its floor (`rounding`)."""
    return _count(numel * (1.0 - sparsity), rounding)


def kept_weights(model: nn.Module, sparsity: float, *, include: Filter = prunable, name: str = "sparsity") -> int:
    """The weights `sparsity` keeps (keep_count) of the prunable weights of `model` that `include` selects; a
    sparsity that keeps none is refused, naming `name`, as sparsity 1 is: a check a command runs before any
    work."""
    numel = sum(param.numel() for _, param in adapter.selected(model, include))
    return checks.keeps_weights(name, sparsity, keep_count(numel, sparsity), numel)


@dataclass(frozen=True)
class Schedule:
    """The exponential schedule towards a target sparsity: after step e = 0 .. steps-1 the pruning keeps
    `counts[e]` weights, and `sparsities[e]` = 1 - (1 - sparsity) ** ((e + 1) / steps) is the step's scheduled
    sparsity, the float the Panning authors' code compares with its stage bounds and observes (the rounded
    count's 1 - counts[e] / numel differs from it by less than 1 / numel)."""

    counts: list[int]
    sparsities: list[float]

    def __len__(self) -> int:
        return len(self.counts)


def schedule(numel: int, sparsity: float, steps: int, rounding: str = "nearest") -> Schedule:
    """The exponential schedule of `steps` steps to `sparsity` over `numel` weights, each count rounded by
    `rounding`; the last count is keep_count(numel, sparsity, rounding), the count every method targets. The one
    place a schedule is derived from a target sparsity (the pruning loop, Panning and the RL environment)."""
    kept = [(1.0 - sparsity) ** ((e + 1) / steps) for e in range(steps)]
    counts = [_count(numel * fraction, rounding) for fraction in kept]
    counts[-1] = keep_count(numel, sparsity, rounding)
    return Schedule(counts, [1.0 - fraction for fraction in kept])


def global_mask(scores: torch.Tensor, k: int, *, within: torch.Tensor | None = None) -> torch.Tensor:
    """Flat bool mask keeping the `k` largest scores over the whole arena (exactly k; ties to the lower index).

    With `within` (a flat bool mask), only weights it keeps are candidates: the others are excluded
    before the single `panning.ops.topk_mask` call, so an iterative method can keep pruned weights pruned.
    `k` must not exceed the candidates then (the pruning loop's schedule never asks for more).
    """
    if within is not None:
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


def _segment_counts(arena: Arena, flat: torch.Tensor) -> torch.Tensor:
    """How many True entries every segment of a flat bool buffer holds, as int64 on the host."""
    ends = torch.cat([flat.new_zeros(1, dtype=torch.int64), flat.cumsum(0, dtype=torch.int64)]).cpu()
    return ends[arena.offsets[1:]] - ends[arena.offsets[:-1]]


def layer_budgets(arena: Arena, sparsity: float, *, budget: str = "global", rounding: str = "nearest") -> torch.Tensor:
    """Kept weights per layer of `arena`, an (S,) int64 tensor on the host.

    "global": one magnitude threshold for all layers. nearest: k[s] is the number of layer-s weights among
    the keep_count(N, sparsity) largest |w| of the arena (ties to the lower flat index), so sum(k) is that
    count. floor (the jackpot authors' count): the threshold is the keep_count(N, sparsity, "floor")-th largest
    |w|, layer s prunes int(size[s] * f[s]) weights where f[s] is the fraction of its |w| strictly below the
    threshold.
    "uniform": k[s] = round((1 - sparsity) * size[s]) (nearest) or size[s] - int(size[s] * sparsity) (floor).
    The arguments are checked by the callers.
    """
    sizes = arena.sizes
    if budget == "uniform":
        if rounding == "nearest":
            return torch.round((1.0 - sparsity) * sizes.double()).to(torch.int64)
        return torch.tensor([n - int(n * sparsity) for n in sizes.tolist()], dtype=torch.int64)
    magnitudes = arena.weights.detach().abs()
    if rounding == "nearest":
        return _segment_counts(arena, ops.topk_mask(magnitudes, keep_count(arena.numel, sparsity)))
    kept = keep_count(arena.numel, sparsity, "floor")
    if kept == 0:
        return torch.zeros(len(arena), dtype=torch.int64)
    threshold = torch.topk(magnitudes, kept).values[-1]
    below = _segment_counts(arena, magnitudes < threshold).tolist()
    return torch.tensor([n - int(n * (b / n)) for n, b in zip(sizes.tolist(), below)], dtype=torch.int64)
