"""Lottery-jackpot search (Zhang, Lin et al., TPAMI 2023): a sparse mask searched in a pre-trained network.

The weights never change: per-weight scores are trained through a straight-through mask, the mask is the
per-layer top-k of the scores (budgets from one global magnitude threshold), the search starts from the
magnitude mask, and the optional short restriction admits only mask swaps the loss does not object to.

    result = panning.jackpot.search(model, panning.data.load("mnist1d"), sparsity=0.9, epochs=10)
    result.masks          # panning.masks.Masks; result.model wears them (a JackpotNet)
"""
from .budget import BUDGETS, INITS, initial_scores, layer_budgets, magnitude_mask, magnitude_masks
from .finetune import finetune
from .layers import JackpotNet, ScoreConv, ScoreLayer, ScoreLinear
from .restriction import rate, short_restriction
from .search import RESTRICTIONS, EpochRecord, Searcher, SearchResult, search

__all__ = ["BUDGETS", "INITS", "RESTRICTIONS", "EpochRecord", "JackpotNet", "ScoreConv", "ScoreLayer",
           "ScoreLinear", "SearchResult", "Searcher", "finetune", "initial_scores", "layer_budgets",
           "magnitude_mask", "magnitude_masks", "rate", "search", "short_restriction"]
