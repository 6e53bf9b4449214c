"""Saliency: normalize raw per-weight indices over the arena and combine them, batched."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import checks as tensor_checks, dispatch


@torch.library.custom_op("panning::saliency", mutates_args=())
def _saliency(indices: torch.Tensor, weights: torch.Tensor, backend: str) -> torch.Tensor:
    return dispatch.kernel("saliency", backend)(indices, weights)


@_saliency.register_fake
def _(indices, weights, backend):
    return indices.new_empty((weights.shape[0], indices.shape[1]))


@torch.library.custom_op("panning::product_score", mutates_args=())
def _product_score(weight: torch.Tensor, grad: torch.Tensor, absolute: bool, backend: str) -> torch.Tensor:
    return dispatch.kernel("product_score", backend)(weight, grad, absolute)


@_product_score.register_fake
def _(weight, grad, absolute, backend):
    return torch.empty_like(weight)


def saliency(indices: torch.Tensor | Sequence[torch.Tensor], weights: torch.Tensor, *,
             backend: str | None = None) -> torch.Tensor:
    """Combined scores `S[b] = sum_k weights[b, k] * |indices[k] - mean_k| / std_k`.

    indices: (K, N) raw scores of K criteria over the same N weights (or a sequence of K vectors, stacked);
    weights: (B, K) one weight vector per candidate, or (K,) for a single one (then the result is (N,)).
    Statistics are taken over all N elements in float64, so large arenas lose no precision; an index
    with zero spread contributes zero. NaN or inf in the indices or the weights raises ValueError (the
    scores must be NaN-free for the top-k that follows).
    """
    if not isinstance(indices, torch.Tensor):
        indices = torch.stack(list(indices))  # torch names an empty sequence or an odd vector; the result is checked
    tensor_checks.operands(indices=indices, weights=weights, dims={"indices": (2,), "weights": (1, 2)},
                           one_dtype=False, shapes={"weights": (*weights.shape[:-1], *indices.shape[:1])})
    tensor_checks.finite("weights", weights)
    single = weights.dim() == 1
    weights2d = weights.unsqueeze(0) if single else weights
    name = dispatch.resolve("saliency", indices.device, backend)
    if not dispatch.checks_inputs(name, "saliency"):  # the C++ kernel rejects them in its statistics pass
        tensor_checks.finite("indices", indices)
    out = _saliency(indices.detach().contiguous(), weights2d.detach().to(torch.float64).contiguous(), name)
    return out[0] if single else out


def product_score(weight: torch.Tensor, grad: torch.Tensor, *, absolute: bool = True,
                  backend: str | None = None) -> torch.Tensor:
    """The elementwise raw score w * g, or |w * g|, in one pass (SNIP, GraSP, SynFlow)."""
    tensor_checks.operands(weight=weight, grad=grad, same_shape=True)
    name = dispatch.resolve("product_score", weight.device, backend)
    return _product_score(weight.detach().contiguous(), grad.detach().contiguous(), absolute, name)
