"""Pruning before training: schedules, batches, the pruning loop, the methods, Panning, and
(panning.pbt.env / panning.pbt.agent) the reinforcement-learning panning agent.

Use `panning.prune(model, method=..., sparsity=..., data=...)` (panning.pbt.entry); this package holds the parts.
"""
from .batches import Batches
from .iterative import prune_loop
from .masking import global_mask
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
from .schedule import exponential, exponential_counts, keep_count, scheduled_sparsities

__all__ = ["Batches", "HandPolicy", "INDICES", "METHODS", "Method", "PanningIndices",
           "PanningScorer", "Problem", "VARIANTS", "WEIGHTS_BY_SPARSITY", "combine", "exponential",
           "exponential_counts", "global_mask", "hand_policy", "index_weights", "keep_count", "prune_loop",
           "scheduled_sparsities", "step_mask"]
