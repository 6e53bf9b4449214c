"""GraSP: gradient signal preservation (Wang, Zhang & Grosse, ICLR 2020)."""
from __future__ import annotations

import torch
from torch import nn

from ..arena import Arena
from . import arguments, scores
from .functional import Batch

TEMPERATURE = 200.0


def grasp(model: nn.Module, arena: Arena, batch: Batch, *, temperature: float = TEMPERATURE) -> torch.Tensor:
    """w * Hg over the arena, on the dense network; keep the LARGEST.

    g is the gradient and H the Hessian of the mean cross-entropy of logits / `temperature` (T = 200 in
    the paper, so that the softmax stays soft at initialization) on `batch`, in train mode.

    Sign convention: the paper scores S(-w) = -w * Hg and removes the weights with the largest S
    (Algorithm 1: keep S < the p-th percentile; the authors' code drops the top-p of -w * Hg). Removing
    the largest -w * Hg is keeping the largest w * Hg, so this function returns w * Hg and, like every
    criterion here, the mask keeps the largest scores. Weights whose removal would most reduce the
    gradient norm (large positive w * Hg) are kept.
    """
    given = arguments.criterion(model, arena, batch=batch, temperature=temperature)
    return scores.grasp(model, arena, given["batch"], given["temperature"])
