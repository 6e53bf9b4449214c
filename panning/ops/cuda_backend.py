"""The hand-written CUDA backend (csrc/cuda/), bound into panning._C_cuda where it was built.

It implements the top-k mask, where a hand-tuned radix select is expected to beat Triton; the other
ops fall through to the Triton backend in the dispatch order. Performance unmeasured so far.
"""
from __future__ import annotations

import torch

try:
    from panning import _C_cuda
    _WHY_NOT = ""
except ImportError as error:
    _C_cuda = None
    _WHY_NOT = ("panning._C_cuda is not built (needs a CUDA build of torch and the CUDA toolkit "
                f"at install time): {error}")

DEVICES = ("cuda",)
# topk_mask counts NaN scores in its first pass and raises ValueError, so the public op skips its own check.
CHECKS_INPUTS = frozenset({"topk_mask"})


def status() -> tuple[bool, str]:
    if _C_cuda is None:
        return False, _WHY_NOT
    if not torch.cuda.is_available():
        return False, "panning._C_cuda is built but no CUDA GPU is visible"
    return True, f"CUDA kernels on {torch.cuda.get_device_name()}"


def topk_mask(scores: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return _C_cuda.topk_mask(scores, offsets, k)
