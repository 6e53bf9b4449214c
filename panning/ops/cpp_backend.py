"""The compiled CPU backend: C++/OpenMP kernels from csrc/, bound into panning._C.

Each function is a kernel with the contract documented in `reference.py`; arguments arrive validated and
contiguous. The top-k kernel rejects NaN scores and the saliency kernel NaN or inf indices themselves
(CHECKS_INPUTS), in a pass they make anyway, which saves the public op one.
"""
from __future__ import annotations

import torch

from .sparse_weight import SparseWeight

try:
    from panning import _C
    _WHY_NOT = ""
except ImportError as error:  # not built: `pip install --no-build-isolation -e .` builds it
    _C = None
    _WHY_NOT = f"panning._C is not built ({error})"

DEVICES = ("cpu",)
CHECKS_INPUTS = frozenset({"topk_mask", "saliency"})


def status() -> tuple[bool, str]:
    if _C is None:
        return False, _WHY_NOT
    return True, f"C++ kernels, {torch.get_num_threads()} threads"


def product_score(weight: torch.Tensor, grad: torch.Tensor, absolute: bool) -> torch.Tensor:
    return _C.product_score(weight, grad, absolute)


def topk_mask(scores: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return _C.topk_mask(scores, offsets, k)


def topk_mask_ties(scores: torch.Tensor, offsets: torch.Tensor,
                   k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """topk_mask and, per segment, whether its k-th and (k+1)-th largest are equal (found by the selection)."""
    return _C.topk_mask_ties(scores, offsets, k)


def saliency(indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return _C.saliency(indices, weights)


KEEPS_MASKED_WEIGHT = True


def masked_linear_fwd(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                      bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    return _C.masked_linear_fwd(x, weight, mask, bias)


def masked_linear_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                      w_eff: torch.Tensor | None, need_dx: bool, need_dw: bool, need_dscore: bool):
    return _C.masked_linear_bwd(dy, x, weight, mask, w_eff, need_dx, need_dw, need_dscore)


def to_sparse(weight: torch.Tensor, mask: torch.Tensor) -> SparseWeight:
    crow, col, values = _C.to_sparse(weight, mask)
    return SparseWeight.trusted((weight.shape[0], weight.shape[1]), crow, col, values)


def sparse_linear_fwd(x: torch.Tensor, sw: SparseWeight, bias: torch.Tensor | None) -> torch.Tensor:
    return _C.sparse_linear_fwd(x, sw.crow_indices, sw.col_indices, sw.values, sw.shape[1], bias)


def sparse_linear_bwd(dy: torch.Tensor, x: torch.Tensor, sw: SparseWeight, need_dx: bool, need_dvalues: bool):
    return _C.sparse_linear_bwd(dy, x, sw.crow_indices, sw.col_indices, sw.values, sw.shape[1],
                                need_dx, need_dvalues)


def sparse_conv_fwd(x: torch.Tensor, sw: SparseWeight, bias: torch.Tensor | None, kernel: list[int],
                    stride: list[int], padding: list[int], dilation: list[int]) -> torch.Tensor:
    return _C.sparse_conv_fwd(x, sw.crow_indices, sw.col_indices, sw.values, kernel, stride, padding, dilation, bias,
                              False)[0]


def sparse_conv_fwd_keep(x: torch.Tensor, sw: SparseWeight, bias: torch.Tensor | None, kernel: list[int],
                         stride: list[int], padding: list[int], dilation: list[int]):
    """(y, x in the kernels' layout): the backward takes the layout back instead of building it again."""
    return _C.sparse_conv_fwd(x, sw.crow_indices, sw.col_indices, sw.values, kernel, stride, padding, dilation, bias,
                              True)


def sparse_conv_bwd(dy: torch.Tensor, x: torch.Tensor, sw: SparseWeight, kernel: list[int], stride: list[int],
                    padding: list[int], dilation: list[int], need_dx: bool, need_dvalues: bool,
                    layout: torch.Tensor | None = None):
    return _C.sparse_conv_bwd(dy, x, sw.crow_indices, sw.col_indices, sw.values, kernel, stride, padding, dilation,
                              need_dx, need_dvalues, layout)


def sparse_conv_direct(x_shape: tuple[int, ...], dtype: torch.dtype, out_channels: int, kept: int,
                       kernel: list[int], stride: list[int], padding: list[int], dilation: list[int]) -> bool:
    """Whether sparse_conv_fwd / _bwd run this geometry on the direct kernels (ops.sparse_conv.direct_path)."""
    return _C.sparse_conv_direct(list(x_shape), dtype == torch.float64, out_channels, kept, kernel, stride, padding,
                                 dilation)
