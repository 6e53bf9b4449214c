"""Drop-in sparse layers, swapping a model's layers to them and back, and torch-style global pruning.

    masks = panning.global_prune(model, 0.9)      # or any pruning method's Masks
    panning.sparsify(model, masks)                # Linear/Conv1d/Conv2d -> SparseLinear/SparseConv1d/SparseConv2d;
                                                  # any other prunable module -> a MaskedModule of its own class
    ...train or run it...
    panning.densify(model)                        # a plain torch model with the zeros baked in
"""
from .convert import dense_state_dict, densify, layer_masks, sparsify
from .global_pruning import global_prune
from .layers import MODES, MaskedModule, SparseConv1d, SparseConv2d, SparseLayer, SparseLinear

__all__ = ["MODES", "MaskedModule", "SparseConv1d", "SparseConv2d", "SparseLayer", "SparseLinear",
           "dense_state_dict", "densify", "global_prune", "layer_masks", "sparsify"]
