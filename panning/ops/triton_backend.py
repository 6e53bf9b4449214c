"""The Triton GPU backend: thin adapters from the kernel contract (reference.py) to panning.kernels.

On a machine without a GPU it runs only under TRITON_INTERPRET=1 (for tests), on CPU tensors.
panning.kernels is the kernels/ folder of the source tree, mapped into the package at install time.
"""
from __future__ import annotations

import os

import torch

from .sparse_weight import SparseWeight

try:  # triton itself is imported by the kernels
    from panning import kernels
    from panning.kernels import masked_matmul, saliency as _saliency, sparse_matmul, topk
    _WHY_NOT = ""
except ImportError as error:
    kernels = None
    _WHY_NOT = f"triton or panning.kernels cannot be imported ({error})"

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = ("cuda", "cpu") if INTERPRETED else ("cuda",)
# topk_mask counts NaN scores in its first pass and raises, so the public op skips its own check.
CHECKS_INPUTS = frozenset({"topk_mask"})


def status() -> tuple[bool, str]:
    if kernels is None:
        return False, _WHY_NOT
    if INTERPRETED:
        return True, "Triton interpreter (TRITON_INTERPRET=1): correctness only"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU (set TRITON_INTERPRET=1 to run the kernels in the interpreter)"
    return True, f"Triton on {torch.cuda.get_device_name()}"


def saliency(indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return _saliency.saliency(indices, weights)


def product_score(weight: torch.Tensor, grad: torch.Tensor, absolute: bool) -> torch.Tensor:
    return _saliency.product_score(weight, grad, absolute)


def topk_mask(scores: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    mask, nan_count = topk.topk_mask(scores, offsets, k)
    if bool(nan_count):
        raise ValueError(f"scores: contains NaN ({int(nan_count)} found by the Triton top-k kernel)")
    return mask


def _bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def masked_linear_fwd(x, weight, mask, bias):
    # The kernel applies the mask while loading weight tiles: no W * M to hand to the backward.
    return masked_matmul.masked_linear_fwd(x, weight, _bool(mask), bias), None


def masked_linear_bwd(dy, x, weight, mask, w_eff, need_dx, need_dw, need_dscore):
    return masked_matmul.masked_linear_bwd(dy, x, weight, _bool(mask), need_dx, need_dw, need_dscore)


def to_sparse(weight: torch.Tensor, mask: torch.Tensor) -> SparseWeight:
    crow, col, values = sparse_matmul.to_sparse(weight, mask)
    return SparseWeight.trusted((weight.shape[0], weight.shape[1]), crow, col, values)


def sparse_linear_fwd(x: torch.Tensor, sw: SparseWeight, bias: torch.Tensor | None) -> torch.Tensor:
    return sparse_matmul.sparse_linear_fwd(x, sw.crow_indices, sw.col_indices, sw.values, bias)


def sparse_linear_bwd(dy: torch.Tensor, x: torch.Tensor, sw: SparseWeight, need_dx: bool, need_dvalues: bool):
    return sparse_matmul.sparse_linear_bwd(dy, x, sw.crow_indices, sw.col_indices, sw.values, need_dx, need_dvalues)
