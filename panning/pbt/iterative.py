"""The pruning loop: every iterative method (SynFlow, iterative SNIP, FORCE, Panning) is a scorer in it.

As in Synaptic-Flow's `prune_loop`: a scorer only computes scores; the loop applies the schedule (the kept
counts) and the masking (one global top-k), both from panning.sparsity.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..sparsity import global_mask

#: score(step, mask) -> flat scores of every weight, given the mask after the previous step (all True first).
Scorer = Callable[[int, torch.Tensor], torch.Tensor]
#: on_step(step, mask) after every step, e.g. for progress bars or diagnostics.
StepHook = Callable[[int, torch.Tensor], None]


def prune_loop(score: Scorer, counts: Sequence[int], numel: int, device: torch.device, *, keep_pruned: bool,
               on_step: StepHook | None = None) -> torch.Tensor:
    """Prune in len(counts) steps: at step e keep the counts[e] highest scores, scored on the previous mask.

    With `keep_pruned` a pruned weight never returns (SynFlow, iterative SNIP); without it every weight
    competes at every step (FORCE, Panning). Returns the final flat bool mask (counts[-1] weights kept).
    """
    mask = torch.ones(numel, dtype=torch.bool, device=device)
    for step, k in enumerate(counts):
        scores = score(step, mask)
        mask = global_mask(scores, k, within=mask if keep_pruned else None)
        if on_step is not None:
            on_step(step, mask)
    return mask
