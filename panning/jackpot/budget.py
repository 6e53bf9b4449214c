"""Per-layer budgets and the starting scores of a lottery-jackpot search.

The search keeps exactly k[s] weights in every layer s of the arena. The budgets come from one global
magnitude threshold over all prunable weights (as magnitude pruning would place them), or uniformly
(the same kept fraction in every layer). The scores start so that their per-layer top-k is the
magnitude mask (default), as |w|, or at random (the ablation of the paper's magnitude start).
"""
from __future__ import annotations

import torch

from torch import nn

from .. import ops
from ..arena import Arena, except_last, prunable
from ..masks import Masks

BUDGETS = ("global", "uniform")
INITS = ("magnitude", "abs", "random")

#: Score gap of the "magnitude" start: kept weights score 1, pruned ones 1 - MARGIN, so a pruned weight
#: must gain MARGIN over a kept one before they swap. Small enough that the search moves from step one.
MARGIN = 0.01


def _check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity: expected a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _segment_counts(arena: Arena, flat: torch.Tensor) -> torch.Tensor:
    """How many True entries every segment of a flat bool buffer holds, as int64 on the host."""
    ends = torch.cat([flat.new_zeros(1, dtype=torch.int64), flat.cumsum(0, dtype=torch.int64)]).cpu()
    return ends[arena.offsets[1:]] - ends[arena.offsets[:-1]]


def layer_budgets(arena: Arena, sparsity: float, *, budget: str = "global") -> torch.Tensor:
    """Kept weights per layer, an (S,) int64 tensor on the host, summing to round((1 - sparsity) * N).

    "global": k[s] is the number of layer-s weights among the round((1 - sparsity) * N) largest |w| of the
    whole arena (ties to the lower flat index), i.e. one magnitude threshold for all layers.
    "uniform": k[s] = round((1 - sparsity) * size[s]) in every layer.
    """
    if not isinstance(arena, Arena):
        raise TypeError(f"arena: expected a panning.arena.Arena, got {type(arena).__name__}")
    keep = 1.0 - _check_sparsity(sparsity)
    if budget == "global":
        kept = round(keep * arena.numel)
        return _segment_counts(arena, ops.topk_mask(arena.weights.detach().abs(), kept))
    if budget == "uniform":
        return torch.round(keep * arena.sizes.double()).to(torch.int64)
    raise ValueError(f"budget: expected one of {', '.join(BUDGETS)}, got {budget!r}")


def magnitude_mask(arena: Arena, k: torch.Tensor) -> torch.Tensor:
    """The flat bool mask keeping the k[s] largest |w| of every layer (ties to the lower index)."""
    return ops.topk_mask(arena.weights.detach().abs(), k, offsets=arena.offsets)


def initial_scores(arena: Arena, k: torch.Tensor, init: str = "magnitude", *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A new flat score buffer (the weights' dtype and device) for the start `init`.

    "magnitude": 1 on the magnitude mask of budget k, 1 - MARGIN elsewhere (per-layer top-k = that mask);
    "abs": |w| (same top-k, but the scores carry each layer's weight scale);
    "random": uniform in [0, 1) from `generator` (CPU), a random start mask.
    """
    if init == "magnitude":
        keep = magnitude_mask(arena, k)
        return torch.full_like(arena.weights, 1.0 - MARGIN).masked_fill_(keep, 1.0)
    if init == "abs":
        return arena.weights.detach().abs().clone()
    if init == "random":
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"generator: expected a CPU generator, got one on {generator.device}")
        draw = torch.rand(arena.numel, generator=generator, dtype=arena.weights.dtype)
        return draw.to(arena.device)
    raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")


def magnitude_masks(model: nn.Module, sparsity: float, *, budget: str = "global",
                    include_classifier: bool = False) -> Masks:
    """What plain magnitude pruning keeps under the budgets a search of `model` would use (the baseline the
    search starts from with init="magnitude"). `model` is only read."""
    arena = Arena(model, include=prunable if include_classifier else except_last(model), share=False)
    return Masks.from_flat(arena, magnitude_mask(arena, layer_budgets(arena, sparsity, budget=budget)))
