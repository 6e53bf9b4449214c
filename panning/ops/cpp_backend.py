"""The compiled CPU backend: C++/OpenMP kernels from csrc/, bound into panning._C.

Each function is a kernel with the contract documented in `reference.py`; arguments arrive validated and
contiguous. The top-k kernel rejects NaN scores itself (CHECKS_NAN), which saves the public op a pass.
"""
from __future__ import annotations

import torch

try:
    from panning import _C
    _WHY_NOT = ""
except ImportError as error:  # not built: `pip install --no-build-isolation -e .` builds it
    _C = None
    _WHY_NOT = f"panning._C is not built ({error})"

DEVICES = ("cpu",)
CHECKS_NAN = True  # topk_mask raises ValueError("scores: contains NaN ...") from C++


def status() -> tuple[bool, str]:
    if _C is None:
        return False, _WHY_NOT
    return True, f"C++ kernels, {torch.get_num_threads()} threads"


def product_score(weight: torch.Tensor, grad: torch.Tensor, absolute: bool) -> torch.Tensor:
    return _C.product_score(weight, grad, absolute)


def topk_mask(scores: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return _C.topk_mask(scores, offsets, k)
