"""Pruning before training: schedules, masks, the iterative methods, Panning,
and (panning.pbt.env / panning.pbt.agent) the reinforcement-learning panning agent.

Use `panning.prune(model, method=..., sparsity=..., data=...)`; this package holds the parts.
"""
from .masking import global_mask
from .methods import METHODS, Method, Problem
from .panning import INDICES, WEIGHTS_BY_SPARSITY, PanningIndices, hand_policy, index_weights, pan, step_mask
from .schedule import exponential, exponential_counts, keep_count

__all__ = ["INDICES", "METHODS", "Method", "PanningIndices", "Problem", "WEIGHTS_BY_SPARSITY",
           "exponential", "exponential_counts", "global_mask", "hand_policy", "index_weights", "keep_count", "pan",
           "step_mask"]
