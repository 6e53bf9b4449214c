"""The pruning loop: every method, one-shot or iterative, is a scorer in it.

As in Synaptic-Flow's `prune_loop`: a scorer only computes scores; the loop owns the schedule (derived once from
the target sparsity by panning.sparsity.schedule) and the masking (one global top-k per step).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..sparsity import global_mask, schedule

#: score(step, mask, scheduled sparsity of the step) -> flat scores of every weight, given the mask after the
#: previous step (all True first).
Scorer = Callable[[int, torch.Tensor, float], torch.Tensor]
#: on_step(step, mask) after every step, e.g. for progress bars or diagnostics.
StepHook = Callable[[int, torch.Tensor], None]


def prune_loop(score: Scorer, numel: int, sparsity: float, steps: int, device: torch.device, *, keep_pruned: bool,
               rounding: str = "nearest", on_step: StepHook | None = None) -> torch.Tensor:
    """Prune `numel` weights to `sparsity` in `steps` steps of the exponential schedule (`rounding` its counts):
    at step e keep the counts[e] highest scores, scored on the previous mask.

    With `keep_pruned` a pruned weight never returns (SynFlow, iterative SNIP); without it every weight
    competes at every step (FORCE, Panning). Returns the final flat bool mask (the target's count kept).
    """
    plan = schedule(numel, sparsity, steps, rounding)
    mask = torch.ones(numel, dtype=torch.bool, device=device)
    for step, (k, scheduled) in enumerate(zip(plan.counts, plan.sparsities)):
        scores = score(step, mask, scheduled)
        mask = global_mask(scores, k, within=mask if keep_pruned else None)
        if on_step is not None:
            on_step(step, mask)
    return mask
