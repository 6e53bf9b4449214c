"""Compressed sparse convolution (Conv1d / Conv2d, groups = 1) for a fixed mask: training and inference of a
pruned convolutional network.

The weight is a SparseWeight over the convolution weight viewed as (out_channels, in_channels * prod(kernel))
in row-major order, i.e. `to_sparse(weight.reshape(out, -1), mask.reshape(out, -1))`: the flat position of a
kept value is its index in `weight.view(-1)`. Gradients go to x, to `sparse_weight.values` (the kept values
only, so the cost of training falls with the density) and to the bias. A Conv1d runs as a Conv2d of height 1.
Double backward is refused (RuntimeError naming the op) rather than computed wrong.
"""
from __future__ import annotations

import torch

from . import dispatch
from .sparse import checked_backend
from .sparse_weight import SparseWeight


def _structure(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, columns: int) -> SparseWeight:
    """The SparseWeight the public op checked, rebuilt inside the custom op (no second scan)."""
    return SparseWeight.trusted((crow.numel() - 1, columns), crow, col, values)


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@torch.library.custom_op("panning::sparse_conv", mutates_args=())
def _sparse_conv(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, kernel: list[int],
                 stride: list[int], padding: list[int], dilation: list[int], bias: torch.Tensor | None,
                 backend: str) -> torch.Tensor:
    sw = _structure(crow, col, values, x.shape[1] * kernel[0] * kernel[1])
    return dispatch.kernel("sparse_conv_fwd", backend)(x, sw, bias, kernel, stride, padding, dilation)


@_sparse_conv.register_fake
def _(x, crow, col, values, kernel, stride, padding, dilation, bias, backend):
    return x.new_empty((x.shape[0], crow.shape[0] - 1,
                        *(_output_size(x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i])
                          for i in range(2))))


@torch.library.custom_op("panning::sparse_conv_backward", mutates_args=())
def _sparse_conv_backward(dy: torch.Tensor, x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
                          values: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
                          dilation: list[int], need_dx: bool, need_dvalues: bool,
                          backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    sw = _structure(crow, col, values, x.shape[1] * kernel[0] * kernel[1])
    grads = dispatch.kernel("sparse_conv_bwd", backend)(dy, x, sw, kernel, stride, padding, dilation, need_dx,
                                                        need_dvalues)
    return tuple(g if g is not None else dy.new_empty(0) for g in grads)


@_sparse_conv_backward.register_fake
def _(dy, x, crow, col, values, kernel, stride, padding, dilation, need_dx, need_dvalues, backend):
    return (x.new_empty(x.shape) if need_dx else dy.new_empty(0),
            values.new_empty(values.shape) if need_dvalues else dy.new_empty(0))


def _setup(ctx, inputs, output):
    x, crow, col, values, kernel, stride, padding, dilation, bias, backend = inputs
    ctx.save_for_backward(x, crow, col, values)
    ctx.geometry, ctx.backend = (kernel, stride, padding, dilation), backend


def _backward(ctx, dy):
    x, crow, col, values = ctx.saved_tensors
    need_dx, need_dvalues, need_db = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[8]
    dx, dvalues = _sparse_conv_backward(dy.contiguous(), x, crow, col, values, *ctx.geometry, need_dx,
                                        need_dvalues, ctx.backend)
    db = dy.sum((0, 2, 3)) if need_db else None
    return (dx if need_dx else None, None, None, dvalues if need_dvalues else None, None, None, None, None, db,
            None)


_sparse_conv.register_autograd(_backward, setup_context=_setup)


class _EagerSparseConv(torch.autograd.Function):
    """The same op outside torch.compile, calling the kernels directly (the custom op's eager dispatch costs
    about 100 us per forward + backward; see masked._EagerMaskedLinear)."""

    @staticmethod
    def forward(ctx, x, crow, col, values, kernel, stride, padding, dilation, bias, backend, name, sw):
        # sw: the SparseWeight around crow, col and values, which the caller checked (rebuilding it here would
        # cost as much as a small layer's kernels)
        ctx.save_for_backward(x, crow, col, values)
        ctx.geometry, ctx.backend, ctx.name, ctx.sw = (kernel, stride, padding, dilation), backend, name, sw
        ctx.layout = None  # x in the backend's own layout, kept for the weight gradient where it has one
        if ctx.needs_input_grad[3] and dispatch.implements(backend, "sparse_conv_fwd_keep"):
            y, ctx.layout = dispatch.kernel("sparse_conv_fwd_keep", backend)(x, sw, bias, kernel, stride, padding,
                                                                            dilation)
            return y
        return dispatch.kernel("sparse_conv_fwd", backend)(x, sw, bias, kernel, stride, padding, dilation)

    @staticmethod
    def backward(ctx, dy):
        if torch.is_grad_enabled():  # create_graph=True: the kernels' gradients carry no graph
            raise RuntimeError(f"{ctx.name}: double backward (create_graph=True) is not supported")
        x = ctx.saved_tensors[0]  # unpacking all saved tensors checks that none was modified in place
        need_dx, need_dvalues, need_db = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[8]
        kept = {"layout": ctx.layout} if ctx.layout is not None else {}
        dx, dvalues = dispatch.kernel("sparse_conv_bwd", ctx.backend)(dy.contiguous(), x, ctx.sw, *ctx.geometry,
                                                                      need_dx, need_dvalues, **kept)
        ctx.layout = None
        db = dy.sum((0, 2, 3)) if need_db else None
        return dx, None, None, dvalues, None, None, None, None, db, None, None, None


def _pointwise_strided(kernel: list[int], stride: list[int], padding: list[int]) -> bool:
    """A 1x1 convolution without padding at a stride above 1: run at stride 1 on the strided slice of x."""
    return kernel == [1, 1] and padding == [0, 0] and stride != [1, 1]


def direct_path(x_shape: tuple[int, ...], dtype: torch.dtype, out_channels: int, kept: int, *, kernel_size,
                stride, padding, dilation) -> bool:
    """Whether the compiled CPU kernel runs a call of this geometry (x of `x_shape`, 3-D for a Conv1d or 4-D; the
    geometry as the layer holds it) on its direct (NCHW) kernels rather than the batch-last ones (docs/ops.md),
    as the cost model of panning.nn needs to know; False where the C++ backend does not run sparse_conv on CPU.
    Takes the layer's own, already checked, geometry."""
    backend = dispatch.resolve("sparse_conv_fwd", torch.device("cpu"))
    if not dispatch.implements(backend, "sparse_conv_direct"):
        return False
    if len(x_shape) == 3:  # a Conv1d runs as a Conv2d of height 1
        x_shape = (x_shape[0], x_shape[1], 1, x_shape[2])
        kernel, stride, padding, dilation = [1, *kernel_size], [1, *stride], [0, *padding], [1, *dilation]
    else:
        kernel, stride, padding, dilation = (list(g) for g in (kernel_size, stride, padding, dilation))
    if _pointwise_strided(kernel, stride, padding):
        x_shape = (*x_shape[:2], -(-x_shape[2] // stride[0]), -(-x_shape[3] // stride[1]))
        stride = [1, 1]
    return dispatch.kernel("sparse_conv_direct", backend)(x_shape, dtype, out_channels, kept, kernel, stride,
                                                          padding, dilation)


def _tuple(name: str, value, n: int, minimum: int) -> list[int]:
    """An int or a sequence of n ints, each >= minimum, as a list of n ints."""
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    if len(items) == 1:
        items = items * n
    if len(items) != n or not all(isinstance(i, int) and not isinstance(i, bool) and i >= minimum for i in items):
        raise ValueError(f"{name}: expected an int >= {minimum} or {n} such ints, got {value!r}")
    return items


def _conv(name: str, x: torch.Tensor, sparse_weight: SparseWeight, bias: torch.Tensor | None, kernel: list[int],
          stride: list[int], padding: list[int], dilation: list[int], backend: str) -> torch.Tensor:
    """The 2-D op (x 4-D, geometry as pairs) on `backend`, called by both public ops after their operand checks;
    it checks the geometry against x and the weight."""
    columns, in_channels = sparse_weight.shape[1], x.shape[1]
    if columns != in_channels * kernel[0] * kernel[1]:
        raise ValueError(f"sparse_weight: expected {in_channels * kernel[0] * kernel[1]} columns (in_channels "
                         f"{in_channels} x kernel_size), got shape {sparse_weight.shape}")
    for i in range(2):
        if _output_size(x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i]) < 1:
            raise ValueError(f"x: spatial shape {tuple(x.shape[2:])} is smaller than the dilated kernel with "
                             f"padding")
    if _pointwise_strided(kernel, stride, padding):
        # A 1x1 convolution reads only every stride-th position: run it at stride 1 on those, which the kernels
        # then neither copy nor visit (autograd scatters dx back through the slice).
        x, stride = x[:, :, ::stride[0], ::stride[1]], [1, 1]
    tensors = (sparse_weight.crow_indices.contiguous(), sparse_weight.col_indices.contiguous(),
               sparse_weight.values.contiguous())
    args = (x.contiguous(), *tensors, kernel, stride, padding, dilation, bias, backend)
    if torch.compiler.is_compiling():
        return _sparse_conv(*args)
    if any(a is not b for a, b in zip(tensors, (sparse_weight.crow_indices, sparse_weight.col_indices,
                                                sparse_weight.values))):
        sparse_weight = _structure(*tensors, columns)
    return _EagerSparseConv.apply(*args, name, sparse_weight)


def sparse_conv2d(x: torch.Tensor, sparse_weight: SparseWeight, bias: torch.Tensor | None = None, *,
                  kernel_size, stride=1, padding=0, dilation=1, backend: str | None = None) -> torch.Tensor:
    """`torch.nn.functional.conv2d(x, W, bias, stride, padding, dilation)` with W (out, in, kh, kw) compressed:
    `sparse_weight` is over W.reshape(out, -1) (see the module docstring). `kernel_size` (int or pair) is
    required: the SparseWeight holds only in * kh * kw. x is (batch, in, height, width)."""
    name = checked_backend("sparse_conv", x, sparse_weight, bias, backend, dims=(4,))
    return _conv("sparse_conv2d", x, sparse_weight, bias, _tuple("kernel_size", kernel_size, 2, 1),
                 _tuple("stride", stride, 2, 1), _tuple("padding", padding, 2, 0), _tuple("dilation", dilation, 2, 1),
                 name)


def sparse_conv1d(x: torch.Tensor, sparse_weight: SparseWeight, bias: torch.Tensor | None = None, *,
                  kernel_size=None, stride=1, padding=0, dilation=1, backend: str | None = None) -> torch.Tensor:
    """`torch.nn.functional.conv1d` with the weight (out, in, k) compressed like sparse_conv2d's; x is
    (batch, in, length). `kernel_size` defaults to the SparseWeight's columns / in_channels (a weight whose columns
    are no multiple of in_channels is refused as not fitting x)."""
    name = checked_backend("sparse_conv", x, sparse_weight, bias, backend, dims=(3,))
    if kernel_size is None:
        kernel_size = sparse_weight.shape[1] // x.shape[1] if x.shape[1] else 0
    (k,), (s,), (p,), (d,) = (_tuple(argument, value, 1, low) for argument, value, low in
                              (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0),
                               ("dilation", dilation, 1)))
    y = _conv("sparse_conv1d", x.unsqueeze(2), sparse_weight, bias, [1, k], [1, s], [0, p], [1, d], name)
    return y.squeeze(2)
