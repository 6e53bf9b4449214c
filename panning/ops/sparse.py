"""Compressed sparse linear for a fixed mask: training and inference of the pruned network.

Second order: a backward that must itself be differentiated (`create_graph=True`) runs the plain-torch reference
formulas (dx = dy W with W scattered from the values, dvalues = (dy^T x) at the kept entries), which autograd
differentiates in x, dy and the values; the compiled kernels run only when no graph is recorded.
"""
from __future__ import annotations

import math

import torch

from . import checks as tensor_checks, dispatch
from .sparse_weight import SparseWeight


def _structure(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, in_features: int) -> SparseWeight:
    """The SparseWeight the public op checked, rebuilt inside the custom op (no second scan)."""
    return SparseWeight.trusted((crow.numel() - 1, in_features), crow, col, values)


@torch.library.custom_op("panning::sparse_linear", mutates_args=())
def _sparse_linear(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                   in_features: int, bias: torch.Tensor | None, backend: str) -> torch.Tensor:
    # A compiled or exported graph may hand the op strided views (the eager path passes contiguous tensors).
    sw = _structure(crow.contiguous(), col.contiguous(), values.contiguous(), in_features)
    return dispatch.kernel("sparse_linear_fwd", backend)(x.contiguous(), sw, bias)


@_sparse_linear.register_fake
def _(x, crow, col, values, in_features, bias, backend):
    return x.new_empty((x.shape[0], crow.shape[0] - 1))


@torch.library.custom_op("panning::sparse_linear_backward", mutates_args=())
def _sparse_linear_backward(dy: torch.Tensor, x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
                            values: torch.Tensor, in_features: int, need_dx: bool, need_dvalues: bool,
                            backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    sw = _structure(crow.contiguous(), col.contiguous(), values.contiguous(), in_features)
    grads = dispatch.kernel("sparse_linear_bwd", backend)(dy.contiguous(), x.contiguous(), sw, need_dx, need_dvalues)
    return tuple(g if g is not None else dy.new_empty(0) for g in grads)


@_sparse_linear_backward.register_fake
def _(dy, x, crow, col, values, in_features, need_dx, need_dvalues, backend):
    return (x.new_empty(x.shape) if need_dx else dy.new_empty(0),
            values.new_empty(values.shape) if need_dvalues else dy.new_empty(0))


def _backward_kernel(backend: str):
    """The backward kernel: the backend's, or the reference's differentiable formulas under create_graph."""
    return dispatch.kernel("sparse_linear_bwd", "reference" if torch.is_grad_enabled() else backend)


def _setup(ctx, inputs, output):
    x, crow, col, values, in_features, bias, backend = inputs
    ctx.save_for_backward(x, crow, col, values)
    ctx.in_features, ctx.backend = in_features, backend


def _backward(ctx, dy):
    x, crow, col, values = ctx.saved_tensors
    need_dx, need_dvalues, need_db = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[5]
    dy = dy.contiguous()
    if torch.is_grad_enabled():
        sw = _structure(crow, col, values, ctx.in_features)
        dx, dvalues = _backward_kernel(ctx.backend)(dy, x, sw, need_dx, need_dvalues)
    else:
        dx, dvalues = _sparse_linear_backward(dy, x, crow, col, values, ctx.in_features, need_dx, need_dvalues,
                                              ctx.backend)
    db = dy.sum(0) if need_db else None
    return (dx if need_dx else None, None, None, dvalues if need_dvalues else None, None, db, None)


_sparse_linear.register_autograd(_backward, setup_context=_setup)


class _EagerSparseLinear(torch.autograd.Function):
    """The same op outside torch.compile, calling the kernels directly (the custom op's eager dispatch costs
    about 100 us per forward + backward; see masked._EagerMaskedLinear)."""

    @staticmethod
    def forward(ctx, x, crow, col, values, in_features, bias, backend, sw):
        # sw: the SparseWeight around crow, col and values, which the caller checked
        ctx.save_for_backward(x, crow, col, values)
        ctx.in_features, ctx.backend = in_features, backend
        return dispatch.kernel("sparse_linear_fwd", backend)(x, sw, bias)

    @staticmethod
    def backward(ctx, dy):
        x, crow, col, values = ctx.saved_tensors
        need_dx, need_dvalues, need_db = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[5]
        sw = _structure(crow, col, values, ctx.in_features)
        dx, dvalues = _backward_kernel(ctx.backend)(dy.contiguous(), x, sw, need_dx, need_dvalues)
        return dx, None, None, dvalues, None, dy.sum(0) if need_db else None, None, None


def to_sparse(weight: torch.Tensor, mask: torch.Tensor, *, backend: str | None = None) -> SparseWeight:
    """Compress the masked-in entries of a (out, in) weight for the fixed-mask path."""
    tensor_checks.operands(weight=weight, dims={"weight": (2,)})
    tensor_checks.mask("mask", mask, weight.shape, on=("weight", weight))
    name = dispatch.resolve("to_sparse", weight.device, backend)
    return dispatch.kernel("to_sparse", name)(weight.detach().contiguous(), mask.contiguous())


def checked_backend(op: str, x: torch.Tensor, sparse_weight: SparseWeight, bias: torch.Tensor | None,
                    backend: str | None, *, dims: tuple[int, ...] | None = None) -> str:
    """The checks sparse_linear and sparse_conv share, and the backend that runs the op's forward and backward: the
    structure (scanned again only if written since it was checked); x (of `dims` dimensions when given), the kept
    values (one per kept entry) and bias (one per output) tensors of one floating dtype on one device."""
    sparse_weight.check()
    tensor_checks.operands(x=x, **{"sparse_weight.values": sparse_weight.values}, bias=bias,
                           dims={"x": dims} if dims else None,
                           shapes={"sparse_weight.values": (sparse_weight.nnz,), "bias": (sparse_weight.shape[0],)})
    name = dispatch.resolve(f"{op}_fwd", x.device, backend)
    dispatch.resolve(f"{op}_bwd", x.device, name)
    return name


def sparse_linear(x: torch.Tensor, sparse_weight: SparseWeight, bias: torch.Tensor | None = None, *,
                  backend: str | None = None) -> torch.Tensor:
    """y = x @ W^T + bias with W compressed; gradients go to x, sparse_weight.values and bias.

    The structure of `sparse_weight` was validated when it was built; an in-place write into its index
    tensors since then is noticed (version counters) and validated again before the kernel runs.
    """
    name = checked_backend("sparse_linear", x, sparse_weight, bias, backend)
    out_features, in_features = sparse_weight.shape
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x: expected last dimension {in_features}, got shape {tuple(x.shape)}")
    rows = math.prod(x.shape[:-1])
    tensors = (sparse_weight.crow_indices.contiguous(), sparse_weight.col_indices.contiguous(),
               sparse_weight.values.contiguous())
    args = (x.reshape(rows, in_features).contiguous(), *tensors, in_features, bias, name)
    if torch.compiler.is_compiling():
        y = _sparse_linear(*args)
    else:
        if any(a is not b for a, b in zip(tensors, (sparse_weight.crow_indices, sparse_weight.col_indices,
                                                    sparse_weight.values))):
            sparse_weight = _structure(*tensors, in_features)
        y = _EagerSparseLinear.apply(*args, sparse_weight)
    return y.view(*x.shape[:-1], out_features)
