"""Drop-in sparse layers, swapping a model's layers to them and back, and torch-style global pruning.

    masks = panning.global_prune(model, 0.9)      # or any pruning method's Masks
    panning.sparsify(model, masks)                # Linear/Conv1d/Conv2d -> SparseLinear/SparseConv1d/SparseConv2d;
                                                  # any other prunable module -> a MaskedModule of its own class
    ...train or run it...
    panning.densify(model)                        # a plain torch model with the zeros baked in
"""
from .convert import dense_state_dict, densify, sparsify
from .layers import AUTO_MAX_DENSITY, MODES, MaskedModule, SparseConv1d, SparseConv2d, SparseLayer, SparseLinear
from .prune import global_prune

__all__ = ["AUTO_MAX_DENSITY", "MODES", "MaskedModule", "SparseConv1d", "SparseConv2d", "SparseLayer", "SparseLinear",
           "dense_state_dict", "densify", "global_prune", "sparsify"]
