"""Plain-torch reference backend: the oracle every other backend is tested against.

Each function here is a *kernel*: it receives arguments already validated and normalized by
`panning.ops` (contiguous, right dtypes, 2-D where documented) and returns plain tensors without
autograd. Readability wins over speed; the semantics defined here are the contract.
"""
from __future__ import annotations

import torch

from .sparse_weight import SparseWeight

# ---------------------------------------------------------------------------------------------
# saliency


def saliency(indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Combine K raw index vectors (K, N) with B weight vectors (B, K) into (B, N) scores.

    Each index is normalized over all N elements to |x - mean| / std (population std, statistics in
    float64); an index with zero spread contributes zero. Output dtype is the dtype of `indices`.
    """
    if indices.shape[1] == 0:
        return indices.new_zeros((weights.shape[0], 0))
    stats = indices.to(torch.float64)
    mean = stats.mean(dim=1, keepdim=True)
    std = stats.std(dim=1, correction=0, keepdim=True)
    inv = torch.where(std > 0, 1.0 / std, torch.zeros_like(std))
    z = (stats - mean).abs() * inv
    return (weights.to(torch.float64) @ z).to(indices.dtype)


def product_score(weight: torch.Tensor, grad: torch.Tensor, absolute: bool) -> torch.Tensor:
    """Elementwise raw score w * g (|w * g| when `absolute`): SNIP, GraSP and SynFlow's last step."""
    out = weight * grad
    return out.abs_() if absolute else out


# ---------------------------------------------------------------------------------------------
# top-k masks


def topk_mask(scores: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep the k[s] largest scores of every segment scores[offsets[s]:offsets[s+1]].

    Exactly k[s] elements are kept; among equal scores the lower index wins; -0.0 equals +0.0.
    """
    mask = torch.zeros_like(scores, dtype=torch.bool)
    bounds = offsets.tolist()
    for s, kk in enumerate(k.tolist()):
        lo, hi = bounds[s], bounds[s + 1]
        if kk == 0:
            continue
        # A stable descending sort keeps equal scores in index order, so the lower index wins ties.
        order = torch.sort(scores[lo:hi], descending=True, stable=True).indices
        mask[lo + order[:kk]] = True
    return mask


# ---------------------------------------------------------------------------------------------
# masked linear: y = x @ (W * M)^T + b


KEEPS_MASKED_WEIGHT = True  # masked_linear_fwd returns W * M, and masked_linear_bwd reuses it


def _masked(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """W * M as a select (a pruned inf stays pruned); a floating mask keeps a weight where mask != 0."""
    return torch.where(mask if mask.dtype == torch.bool else mask != 0, weight, 0)


def masked_linear_fwd(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                      bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (y, W * M): y = x (W * M)^T + b; W * M (or None, for a backend that does not keep it) is handed
    back to masked_linear_bwd. The mask is bool or of the weight's dtype."""
    w_eff = _masked(weight, mask)
    y = x @ w_eff.t()
    return (y + bias if bias is not None else y), w_eff


def masked_linear_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                      w_eff: torch.Tensor | None, need_dx: bool, need_dw: bool, need_dscore: bool):
    """Return (dx, dW_eff * M, dW_eff * W), each None where not needed; dW_eff = dy^T x."""
    dx = dy @ (w_eff if w_eff is not None else _masked(weight, mask)) if need_dx else None
    dw_eff = dy.t() @ x if (need_dw or need_dscore) else None
    dw = _masked(dw_eff, mask) if need_dw else None
    dscore = dw_eff * weight if need_dscore else None
    return dx, dw, dscore


# ---------------------------------------------------------------------------------------------
# compressed sparse linear (fixed mask)


def to_sparse(weight: torch.Tensor, mask: torch.Tensor) -> SparseWeight:
    return SparseWeight.from_dense(weight, mask)


def sparse_linear_fwd(x: torch.Tensor, sw: SparseWeight, bias: torch.Tensor | None) -> torch.Tensor:
    y = x @ sw.to_dense().t()
    return y + bias if bias is not None else y


def sparse_linear_bwd(dy: torch.Tensor, x: torch.Tensor, sw: SparseWeight,
                      need_dx: bool, need_dvalues: bool):
    """Return (dx, dvalues): dx = dy W; dvalues = (dy^T x) at the kept positions, in CSR order."""
    dx = dy @ sw.to_dense() if need_dx else None
    dvalues = (dy.t() @ x)[sw.row_indices(), sw.col_indices] if need_dvalues else None
    return dx, dvalues


# ---------------------------------------------------------------------------------------------
# compressed sparse convolution (fixed mask): x (B, C, H, W), the weight (O, C * kh * kw) in CSR


def _conv_weight(sw: SparseWeight, channels: int, kernel: list[int]) -> torch.Tensor:
    return sw.to_dense().view(sw.shape[0], channels, *kernel)


def sparse_conv_fwd(x: torch.Tensor, sw: SparseWeight, bias: torch.Tensor | None, kernel: list[int],
                    stride: list[int], padding: list[int], dilation: list[int]) -> torch.Tensor:
    """conv2d of x with the scattered weight (groups 1)."""
    return torch.nn.functional.conv2d(x, _conv_weight(sw, x.shape[1], kernel), bias, stride, padding, dilation)


def sparse_conv_bwd(dy: torch.Tensor, x: torch.Tensor, sw: SparseWeight, kernel: list[int], stride: list[int],
                    padding: list[int], dilation: list[int], need_dx: bool, need_dvalues: bool):
    """Return (dx, dvalues): the gradient of conv2d for x, and for the weight at the kept positions, in CSR
    order."""
    weight = _conv_weight(sw, x.shape[1], kernel)
    dx = torch.nn.grad.conv2d_input(x.shape, weight, dy, stride, padding, dilation) if need_dx else None
    dvalues = None
    if need_dvalues:
        dw = torch.nn.grad.conv2d_weight(x, weight.shape, dy, stride, padding, dilation)
        dvalues = dw.reshape(sw.shape)[sw.row_indices(), sw.col_indices]
    return dx, dvalues
