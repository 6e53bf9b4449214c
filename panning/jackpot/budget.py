"""The magnitude masks and the starting scores of a lottery-jackpot search.

The search keeps exactly k[s] weights in every layer s of the arena: the per-layer budgets of
panning.sparsity.layer_budgets, from one global magnitude threshold over all prunable weights (as magnitude
pruning would place them) or uniform (the same kept fraction in every layer), rounded "nearest" or "floor"
(the authors' counts).

Starting scores (docs/jackpot.md, "Starts"):
- "magnitude" (default): scores = |w|. Their per-layer top-k is the magnitude mask, and the margin between
  a kept and a pruned weight scales with the layer's weights, as does the score gradient dL/dW_eff * w: a
  swap needs a gradient signal comparable to the weights themselves, at any model size.
- "flat": the authors' start, 1 on the magnitude mask and 1 - FLAT_MARGIN elsewhere. The same mask, but a
  fixed 0.01 margin that one lr-0.1 step crosses easily on small networks.
- "random": uniform in [0, 1), a random start mask (the paper's start ablation).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .. import checks, ops
from ..arena import Arena, except_last, prunable
from ..masks import Masks
from ..sparsity import BUDGETS, ROUNDINGS, layer_budgets
from ..train import evaluate, reestimate_batchnorm

INITS = ("magnitude", "flat", "random")

#: Score gap of the authors' flat start: kept weights score 1, pruned ones 1 - FLAT_MARGIN.
FLAT_MARGIN = 0.01


def magnitude_mask(arena: Arena, k: torch.Tensor) -> torch.Tensor:
    """The flat bool mask keeping the k[s] largest |w| of every layer (ties to the lower index)."""
    return ops.topk_mask(arena.weights.detach().abs(), k, offsets=arena.offsets)


def initial_scores(arena: Arena, k: torch.Tensor, init: str = "magnitude", *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A new flat score buffer (the weights' dtype and device) for the start `init`, one of INITS (see the module
    doc; the search's configuration checked it); "random" draws from `generator` (CPU)."""
    if init == "flat":
        keep = magnitude_mask(arena, k)
        return torch.full_like(arena.weights, 1.0 - FLAT_MARGIN).masked_fill_(keep, 1.0)
    if init == "random":
        draw = torch.rand(arena.numel, generator=generator, dtype=arena.weights.dtype)
        return draw.to(arena.device)
    return arena.weights.detach().abs().clone()


def magnitude_masks(model: nn.Module, sparsity: float, *, budget: str = "global", rounding: str = "nearest",
                    include_classifier: bool = False) -> Masks:
    """What plain magnitude pruning keeps under the budgets a search of `model` would use (the baseline the
    search starts from with init="magnitude" or "flat"). `model` is only read."""
    sparsity = checks.sparsity("sparsity", sparsity)
    checks.choice("budget", budget, BUDGETS)
    checks.choice("rounding", rounding, ROUNDINGS)
    arena = Arena(model, include=prunable if include_classifier else except_last(model), share=False)
    k = layer_budgets(arena, sparsity, budget=budget, rounding=rounding)
    checks.keeps_weights("sparsity", sparsity, int(k.sum()), arena.numel)
    return Masks.from_flat(arena, magnitude_mask(arena, k))


def magnitude_baseline(model: nn.Module, data, sparsity: float, *, batch_size: int = 256, device="cpu",
                       **budgets) -> tuple[Masks, float, float | None]:
    """The baseline a search must beat, on the DataBundle `data`: the magnitude masks under the search's budgets
    (`budgets`: budget, rounding, include_classifier), their test accuracy, and the test accuracy once the
    BatchNorm running statistics are re-estimated for the pruned network (None where it has no BatchNorm).
    `model` is only read."""
    masks = magnitude_masks(model, sparsity, **budgets)
    pruned = masks.apply(copy.deepcopy(model))
    plain = evaluate(pruned, data.test, device=device)[1]
    if not reestimate_batchnorm(pruned, data.train, batch_size, device):
        return masks, plain, None
    return masks, plain, evaluate(pruned, data.test, device=device)[1]
