"""The score of every criterion, defined once (Synaptic-Flow's one `score()` per pruner): what the public
criteria return after checking their arguments, and what the pruning methods, Panning and the RL environment
call, trusting arguments checked at their own boundary (panning.prune, the environments' constructors).

Each returns raw per-weight scores as one flat tensor in the arena's layout; a mask keeps the largest.
"""
from __future__ import annotations

import torch
from torch import nn

from ..arena import Arena
from ..ops import product_score
from .functional import Batch
from .passes import flow, gradient_pass, masked_gradient


def magnitude(arena: Arena) -> torch.Tensor:
    """|w|."""
    return arena.weights.detach().abs()


def random(arena: Arena, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform scores in [0, 1), drawn on the CPU from `generator` (then moved): a seed gives the same mask on
    every device."""
    return torch.rand(arena.numel, generator=generator, dtype=arena.weights.dtype).to(arena.device)


def snip(model: nn.Module, arena: Arena, batch: Batch, mask: torch.Tensor | None = None) -> torch.Tensor:
    """|w * dL/dw_eff| at w_eff = w * mask (the dense network when `mask` is None): SNIP, and FORCE's score."""
    return product_score(arena.weights.detach(), masked_gradient(model, arena, batch, mask))


def iterative_snip(model: nn.Module, arena: Arena, batch: Batch, mask: torch.Tensor) -> torch.Tensor:
    """SNIP at w * mask, pruned weights -inf (they stay pruned)."""
    return snip(model, arena, batch, mask).masked_fill_(~mask, float("-inf"))


def grasp(model: nn.Module, arena: Arena, batch: Batch, temperature: float) -> torch.Tensor:
    """w * Hg of the dense network, logits / `temperature` (keep the largest)."""
    return gradient_pass(model, arena, batch, temperature).grasp


def synflow(model: nn.Module, arena: Arena, input_shape: tuple[int, ...],
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """|w| * m * dR/d(|w| * m) in the arena's dtype (passes.flow)."""
    return flow(model, arena, input_shape, mask).scores(arena.weights.dtype)
