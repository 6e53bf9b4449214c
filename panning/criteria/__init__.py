"""Saliency criteria for pruning before training: one small function each, returning raw per-weight
scores as one flat tensor in the arena's layout (`panning.arena.Arena`). A mask keeps the largest scores.

=============== ============================================ ===============================================
function        score                                        needs
=============== ============================================ ===============================================
magnitude       |w|                                          the arena
random          uniform [0, 1)                               a generator
snip            |w * dL/dw| (dense, or at w * mask)          a batch
grasp           w * Hg, logits / 200 (keep the largest)      a batch
synflow         |w| * dR/d|w| on the |w| * m network, ones   the input shape
iterative_snip  snip at w * mask, pruned weights -inf        a batch and the current mask
force           snip at w * mask, pruned weights scored      a batch and the current mask
=============== ============================================ ===============================================

Criteria never modify the model. Data-dependent ones take an (inputs, labels) batch, which the
pruning drivers (panning.pbt) draw class-balanced with `panning.data.class_balanced_batch`.

Each function here returns the score defined once in `panning.criteria.scores`, which the pruning methods,
Panning and the RL environment call unchecked; those of a model check its arguments first (one
`arguments.criterion` call), the data-free `magnitude` and `random` have nothing a wrong type would not fail on at
once. Schedules are panning.sparsity's; the pruning loop is panning.pbt's.
"""
from .basic import magnitude, random
from .functional import Batch
from .grasp import TEMPERATURE, grasp
from .snip import force, iterative_snip, snip
from .synflow import synflow

__all__ = ["TEMPERATURE", "Batch", "force", "grasp", "iterative_snip", "magnitude", "random", "snip", "synflow"]
