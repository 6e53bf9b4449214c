"""Masked linear: y = x @ (W * M)^T + b while the mask changes every step (search, pruning).

The weight gradient is masked (sparse training) and, for mask search, the mask can receive the
straight-through gradient dL/dW_eff * W in the same backward pass.

Second order: a backward that must itself be differentiated (`create_graph=True`, as GraSP's Hessian-gradient
product and Panning's indices need) runs the plain-torch reference formulas, which autograd differentiates; the
compiled kernels write into preallocated outputs and run only when no graph is recorded.
"""
from __future__ import annotations

import math

import torch

from . import checks as tensor_checks, dispatch


@torch.library.custom_op("panning::masked_linear", mutates_args=())
def _masked_linear(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
                   backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    # A compiled or exported graph may hand the op strided views (the eager path passes contiguous tensors).
    y, w_eff = dispatch.kernel("masked_linear_fwd", backend)(x.contiguous(), weight.contiguous(), mask.contiguous(),
                                                             bias)
    # W * M travels to the backward where the backend made it (custom ops return tensors, not None).
    return y, w_eff if w_eff is not None else weight.new_empty(0)


@_masked_linear.register_fake
def _(x, weight, mask, bias, backend):
    keeps = dispatch.keeps_masked_weight(backend)
    return x.new_empty((x.shape[0], weight.shape[0])), weight.new_empty(weight.shape if keeps else (0,))


@torch.library.custom_op("panning::masked_linear_backward", mutates_args=())
def _masked_linear_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                            w_eff: torch.Tensor, need_dx: bool, need_dw: bool, need_dscore: bool,
                            backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = dispatch.kernel("masked_linear_bwd", backend)(dy.contiguous(), x.contiguous(), weight.contiguous(),
                                                          mask.contiguous(), w_eff if w_eff.numel() else None,
                                                          need_dx, need_dw, need_dscore)
    # Custom ops cannot return None: an unneeded gradient travels as an empty 1-D tensor.
    return tuple(g if g is not None else dy.new_empty(0) for g in grads)


@_masked_linear_backward.register_fake
def _(dy, x, weight, mask, w_eff, need_dx, need_dw, need_dscore, backend):
    return (x.new_empty(x.shape) if need_dx else dy.new_empty(0),
            weight.new_empty(weight.shape) if need_dw else dy.new_empty(0),
            weight.new_empty(weight.shape) if need_dscore else dy.new_empty(0))


def _differentiable_backward(dy, x, weight, mask, need_dx, need_dw, need_dscore):
    """(dx, dw, dscore) from the reference formulas, recorded by autograd for a double backward. W * M is
    recomputed from `weight` (the forward's copy carries no history)."""
    return dispatch.kernel("masked_linear_bwd", "reference")(dy, x, weight, mask, None, need_dx, need_dw,
                                                             need_dscore)


def _setup(ctx, inputs, output):
    x, weight, mask, bias, backend = inputs
    ctx.save_for_backward(x, weight, mask, output[1])
    ctx.backend = backend


def _backward(ctx, dy, _):
    x, weight, mask, w_eff = ctx.saved_tensors
    need_dx, need_dw, need_dscore, need_db = ctx.needs_input_grad[:4]
    dy = dy.contiguous()
    if torch.is_grad_enabled():
        dx, dw, dscore = _differentiable_backward(dy, x, weight, mask, need_dx, need_dw, need_dscore)
    else:
        dx, dw, dscore = _masked_linear_backward(dy, x, weight, mask, w_eff, need_dx, need_dw, need_dscore,
                                                 ctx.backend)
    db = dy.sum(0) if need_db else None
    return (dx if need_dx else None, dw if need_dw else None, dscore if need_dscore else None, db, None)


_masked_linear.register_autograd(_backward, setup_context=_setup)


class _EagerMaskedLinear(torch.autograd.Function):
    """The same op outside torch.compile: an autograd.Function calls the kernels directly. The custom op's
    eager dispatch costs about 100 us more per forward + backward (measured: 160 against 63 us at 4 x 8 x 8),
    which made small layers slower than `x @ (W * M).T`; under torch.compile the custom op runs instead."""

    @staticmethod
    def forward(ctx, x, weight, mask, bias, backend):
        y, w_eff = dispatch.kernel("masked_linear_fwd", backend)(x, weight, mask, bias)
        ctx.save_for_backward(x, weight, mask, w_eff)
        ctx.backend = backend
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mask, w_eff = ctx.saved_tensors
        need_dx, need_dw, need_dscore, need_db = ctx.needs_input_grad[:4]
        dy = dy.contiguous()
        if torch.is_grad_enabled():
            dx, dw, dscore = _differentiable_backward(dy, x, weight, mask, need_dx, need_dw, need_dscore)
        else:
            dx, dw, dscore = dispatch.kernel("masked_linear_bwd", ctx.backend)(dy, x, weight, mask, w_eff,
                                                                               need_dx, need_dw, need_dscore)
        return dx, dw, dscore, dy.sum(0) if need_db else None, None


def masked_linear(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None,
                  *, score_grad: bool = False, backend: str | None = None) -> torch.Tensor:
    """y = x @ (weight * mask)^T + bias without materializing weight * mask.

    x: (..., in); weight: (out, in); mask: (out, in) bool, or floating 0/1 (any other value is refused: 0.5 is
    neither kept nor pruned); bias: (out,) or None.
    The weight receives dW_eff * mask (pruned weights get no gradient). With `score_grad=True` the mask
    must be a floating tensor standing for top-k(scores) (e.g. a straight-through view of the scores)
    and receives dW_eff * weight, the straight-through score gradient of Lottery Jackpots.
    """
    tensor_checks.operands(x=x, weight=weight, bias=bias, dims={"weight": (2,)}, shapes={"bias": weight.shape[:1]})
    # With score_grad the mask carries the scores' gradient: a bool one could not.
    tensor_checks.mask("mask", mask, weight.shape, on=("weight", weight), floating=True, boolean=not score_grad)
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x: expected last dimension {weight.shape[1]} (weight is {tuple(weight.shape)}), "
                         f"got shape {tuple(x.shape)}")
    if not score_grad:
        mask = mask.detach()
        if mask.dtype.is_floating_point:
            tensor_checks.zero_one("mask", mask)
    if mask.dtype != torch.bool and mask.dtype != weight.dtype:
        mask = mask != 0  # the kernels read a bool mask or one of the weight's dtype
    name = dispatch.resolve("masked_linear_fwd", x.device, backend)
    # Not reshape(-1, in): that fails for in_features 0. A 2-D x (the common case) skips the reshapes.
    flat = x if x.dim() == 2 else x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    args = (flat.contiguous(), weight.contiguous(), mask.contiguous(), bias, name)
    compiling = torch.compiler.is_compiling() or torch.compiler.is_exporting()  # a graph: the custom op
    if not compiling and not (torch.is_grad_enabled() and
                              any(t is not None and t.requires_grad for t in (x, weight, mask, bias))):
        y = dispatch.kernel("masked_linear_fwd", name)(*args[:4])[0]  # nothing to differentiate: no autograd node
    else:
        dispatch.resolve("masked_linear_bwd", x.device, name)
        y = _masked_linear(*args)[0] if compiling else _EagerMaskedLinear.apply(*args)
    return y if x.dim() == 2 else y.view(*x.shape[:-1], weight.shape[0])
