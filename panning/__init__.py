"""panning: find sparse sub-networks fast (Neural Network Panning, Lottery Jackpots) on compiled kernels."""
import torch  # noqa: F401  (loads libtorch before the compiled extensions)

from . import data, jackpot, models, nn, ops, train
from .masks import Masks
from .nn import dense_state_dict, densify, global_prune, sparsify
from .prune import prune

__version__ = "0.1.0"
__all__ = ["Masks", "data", "dense_state_dict", "densify", "global_prune", "jackpot", "models", "nn", "ops", "prune",
           "sparsify", "train"]
