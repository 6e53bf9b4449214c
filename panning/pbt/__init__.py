"""Pruning before training: batches, the pruning loop, the methods, Panning, and
(panning.pbt.rl) the reinforcement-learning panning agent.

Use `panning.prune(model, method=..., sparsity=..., data=...)` (panning.pbt.entry); this package holds the parts.
Kept counts, the exponential schedule and the global mask are panning.sparsity's.
"""
from .batches import Batches
from .iterative import prune_loop
from .methods import METHODS, Method, Problem
from .panning import (
    INDICES,
    VARIANTS,
    WEIGHTS_BY_SPARSITY,
    HandPolicy,
    PanningIndices,
    PanningScorer,
    combine,
    hand_policy,
    index_weights,
    step_mask,
)

__all__ = ["Batches", "HandPolicy", "INDICES", "METHODS", "Method", "PanningIndices",
           "PanningScorer", "Problem", "VARIANTS", "WEIGHTS_BY_SPARSITY", "combine", "hand_policy",
           "index_weights", "prune_loop", "step_mask"]
