"""Connection sensitivity |w * dL/dw| (SNIP) and its iterative forms (iterative SNIP, FORCE).

All three score a weight by |w * g| where g = dL/dw_eff is the loss gradient of the network whose
weights are w_eff = w * m, and w are the dense weights. This is |dL/dc| for a multiplicative gate c on
the weight at c = m, i.e. the first-order loss change of removing (or restoring) the connection.
- SNIP (Lee et al., 2019): m = 1, one shot on the dense network.
- FORCE (de Jorge et al., 2021): m = the current mask; pruned weights are scored too (with their dense
  value), so they may come back at the next step.
- iterative SNIP: the same scores, but pruned weights stay pruned (their score is -inf).
"""
from __future__ import annotations

import torch
from torch import nn

from ..arena import Arena
from . import arguments, scores
from .functional import Batch


def snip(model: nn.Module, arena: Arena, batch: Batch, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """|w * dL/dw_eff| at w_eff = w * mask (the dense network when `mask` is None), over the arena.

    `batch` is an (inputs, labels) pair, usually class-balanced (panning.data.class_balanced_batch). The
    loss is the mean cross-entropy in train mode; the model itself is not modified.
    """
    batch = arguments.criterion(model, arena, batch=batch, mask=mask)["batch"]
    return scores.snip(model, arena, batch, mask)


def force(model: nn.Module, arena: Arena, batch: Batch, mask: torch.Tensor) -> torch.Tensor:
    """FORCE scores: the gradient at the pruned point w * mask times the dense weights, for every weight
    (pruned ones included, so a later step may bring them back)."""
    batch = arguments.criterion(model, arena, batch=batch, mask=mask, dense=False)["batch"]
    return scores.snip(model, arena, batch, mask)


def iterative_snip(model: nn.Module, arena: Arena, batch: Batch, mask: torch.Tensor) -> torch.Tensor:
    """SNIP recomputed on the pruned network w * mask; pruned weights score -inf so they stay pruned."""
    batch = arguments.criterion(model, arena, batch=batch, mask=mask, dense=False)["batch"]
    return scores.iterative_snip(model, arena, batch, mask)
