"""SynFlow: iterative synaptic flow conservation (Tanaka et al., NeurIPS 2020), data-free."""
from __future__ import annotations

import torch
from torch import nn

from ..arena import Arena
from . import arguments, scores


def synflow(model: nn.Module, arena: Arena, input_shape, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """|w| * m * dR/d(|w| * m) over the arena, where R = sum(f(1)) is the summed output of the network with
    every parameter replaced by its absolute value (arena weights also masked), on an all-ones input.

    BatchNorm runs in eval mode (its running statistics, made non-negative like everything else). For the
    score to be conserved, pruned weights score 0. Computed in float32 as the authors do (float64 for a
    float64 arena, and where float32 overflows; see panning.criteria.passes.flow).

    Deep networks: R is a product over layers and overflows (or underflows) any float. Out-of-range layer
    outputs are rescaled by powers of two; for the usual zero-bias initialization that scales every score
    by the same power of two, so the ranking is exact. The scale is undone where the true scores fit the
    arena's dtype, else the scores come back scaled by a power of two that keeps the largest one
    representable (the ranking is all any mask uses).
    """
    shape = arguments.criterion(model, arena, input_shape=input_shape, mask=mask)["input_shape"]
    return scores.synflow(model, arena, shape, mask)
