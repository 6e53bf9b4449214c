"""panning: find sparse sub-networks fast (Neural Network Panning, Lottery Jackpots) on compiled kernels.

The public names below load on first use, so that ``import panning.cli`` (and ``panning --help``) does not pay
for importing torch. ``panning.prune`` is the function of panning.pbt.entry; no module is called panning.prune.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it (a submodule stands for itself)
_LAZY = {
    "Masks": "panning.masks",
    "prune": "panning.pbt.entry",
    "dense_state_dict": "panning.nn",
    "densify": "panning.nn",
    "global_prune": "panning.nn",
    "sparsify": "panning.nn",
    **{name: f"panning.{name}" for name in ("data", "jackpot", "models", "nn", "ops", "train")},
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'panning' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__ == f"panning.{name}" else getattr(module, name)
