"""`panning.prune`, defined in panning.pbt.prune (the arrows point from here into pbt, never back)."""
from .pbt.prune import prune

__all__ = ["prune"]
