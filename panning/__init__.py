"""panning: find sparse sub-networks fast (Neural Network Panning, Lottery Jackpots) on compiled kernels.

The public names below load on first use, so that ``import panning.cli`` (and ``panning --help``) does not pay
for importing torch. ``panning.prune`` is the function, also once the module of the same name is imported.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it (a submodule stands for itself)
_LAZY = {
    "Masks": "panning.masks",
    "prune": "panning.prune",
    "dense_state_dict": "panning.nn",
    "densify": "panning.nn",
    "global_prune": "panning.nn",
    "sparsify": "panning.nn",
    **{name: f"panning.{name}" for name in ("data", "jackpot", "models", "nn", "ops", "train")},
}
__all__ = sorted(_LAZY)


class _Package(types.ModuleType):
    def __getattr__(self, name: str):
        if name not in _LAZY:
            raise AttributeError(f"module 'panning' has no attribute {name!r}")
        module = importlib.import_module(_LAZY[name])
        return module if module.__name__ == f"panning.{name}" and name != "prune" else getattr(module, name)

    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule panning.prune binds it here; keep the function it defines under that name.
        if name == "prune" and isinstance(value, types.ModuleType):
            value = value.prune
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
