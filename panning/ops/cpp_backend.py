"""The compiled CPU backend: C++/OpenMP kernels from csrc/, bound into panning._C."""
from __future__ import annotations

import torch

try:
    from panning import _C
    _WHY_NOT = ""
except ImportError as error:  # not built: `pip install --no-build-isolation -e .` builds it
    _C = None
    _WHY_NOT = f"panning._C is not built ({error})"

DEVICES = ("cpu",)


def status() -> tuple[bool, str]:
    if _C is None:
        return False, _WHY_NOT
    return True, f"C++ kernels, {torch.get_num_threads()} threads"


def product_score(weight: torch.Tensor, grad: torch.Tensor, absolute: bool) -> torch.Tensor:
    return _C.product_score(weight, grad, absolute)
