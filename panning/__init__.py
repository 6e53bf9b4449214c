"""panning: find sparse sub-networks fast (Neural Network Panning, Lottery Jackpots) on compiled kernels."""
import torch  # noqa: F401  (loads libtorch before the compiled extensions)

__version__ = "0.1.0"
