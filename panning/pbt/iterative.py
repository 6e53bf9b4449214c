"""The iterative driver: re-score and re-mask along the exponential schedule (SynFlow, iterative SNIP, FORCE)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .masking import global_mask
from .schedule import exponential_counts

#: score(mask, step) -> flat scores of every weight, given the mask after the previous step (all True first).
Scorer = Callable[[torch.Tensor, int], torch.Tensor]
#: on_step(step, mask) after every step, e.g. for progress bars or diagnostics.
StepHook = Callable[[int, torch.Tensor], None]


def iterate(score: Scorer, numel: int, device: torch.device, sparsity: float, steps: int, *,
            keep_pruned: bool, on_step: StepHook | None = None) -> torch.Tensor:
    """Prune in `steps` steps to `sparsity`: at step e keep the exponential schedule's count of the
    highest scores, re-scored on the previous mask. With `keep_pruned` a pruned weight never returns
    (SynFlow, iterative SNIP); without it every weight competes at every step (FORCE).
    Returns the final flat bool mask, with exactly round(numel * (1 - sparsity)) weights kept.
    """
    counts = exponential_counts(numel, sparsity, steps)
    mask = torch.ones(numel, dtype=torch.bool, device=device)
    for step, k in enumerate(counts):
        scores = score(mask, step)
        mask = global_mask(scores, k, within=mask if keep_pruned else None)
        if on_step is not None:
            on_step(step, mask)
    return mask
