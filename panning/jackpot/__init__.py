"""Lottery-jackpot search (Zhang, Lin et al., TPAMI 2023): a sparse mask searched in a pre-trained network.

The weights never change: per-weight scores are trained through a straight-through mask (panning.nn sparse
layers with scores), the mask is the per-layer top-k of the scores (budgets from one global magnitude
threshold), the search starts from the magnitude mask, and the optional short restriction admits only mask
swaps the loss does not object to. See docs/jackpot.md.

    result = panning.jackpot.search(model, panning.data.load("mnist1d"), sparsity=0.9, epochs=10)
    result.masks          # panning.masks.Masks; result.model wears them
    panning.jackpot.search(model, data, sparsity=0.9, preset="authors")   # the authors' code, step for step
"""
from .budget import INITS, initial_scores, magnitude_baseline, magnitude_mask, magnitude_masks
from .finetune import finetune
from .restriction import rate, short_restriction, top_k_refresh
from .searching import PRESETS, RESTRICTIONS, EpochRecord, SearchConfig, Searcher, SearchResult, search
from .space import SearchSpace

__all__ = ["INITS", "PRESETS", "RESTRICTIONS", "EpochRecord", "SearchConfig", "SearchResult",
           "SearchSpace", "Searcher", "finetune", "initial_scores", "magnitude_baseline",
           "magnitude_mask", "magnitude_masks", "rate", "search", "short_restriction", "top_k_refresh"]
