"""sparse_conv2d / sparse_conv1d on every backend against torch's dense convolution of the masked weight
(values, input and bias gradients), gradcheck in float64, and the refusals."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from panning import ops
from panning.ops import dispatch

BACKENDS = [name for name in dispatch.BACKENDS if dispatch.can_run(name, "sparse_conv_fwd", "cpu") is None]


def _inputs(batch, channels, out, spatial, kernel, density, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *spatial, generator=g, dtype=dtype)
    w = torch.randn(out, channels, *kernel, generator=g, dtype=dtype)
    mask = torch.rand(w.shape, generator=g) < density
    b = torch.randn(out, generator=g, dtype=dtype)
    return x, w, mask, b


def _check_against_dense(conv, sparse_conv, x, w, mask, b, backend, **geometry):
    sw = ops.to_sparse(w.reshape(w.shape[0], -1), mask.reshape(w.shape[0], -1))
    xs, values, bs = x.clone().requires_grad_(), sw.values.clone().requires_grad_(), b.clone().requires_grad_()
    y = sparse_conv(xs, sw.with_values(values), bs, backend=backend, **geometry)
    xd, wd, bd = x.clone().requires_grad_(), (w * mask).requires_grad_(), b.clone().requires_grad_()
    expected = conv(xd, wd, bd, **{k: v for k, v in geometry.items() if k != "kernel_size"})
    assert y.shape == expected.shape
    dy = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=expected.dtype)
    y.backward(dy)
    expected.backward(dy)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(xs.grad, xd.grad)
    # Row-major order of the kept positions = CSR order. The weight and bias gradients sum batch x positions
    # terms (up to 640 here) in another order than torch: float32 rounding allows ~1e-5 on sums of tens.
    torch.testing.assert_close(values.grad, wd.grad[mask], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(bs.grad, bd.grad, rtol=1e-5, atol=1e-4)


CASES_2D = [  # batch, in, out, (h, w), (kh, kw), stride, padding, dilation, density
    (2, 3, 4, (5, 5), (3, 3), 1, 1, 1, 0.5),
    (3, 5, 7, (9, 7), (3, 3), 2, 1, 1, 0.3),
    (2, 4, 6, (11, 10), (3, 2), (2, 3), (2, 0), (2, 1), 0.4),
    (1, 6, 5, (8, 8), (1, 1), 1, 0, 1, 0.2),
    (2, 6, 5, (7, 9), (1, 1), 2, 0, 1, 0.6),
    (17, 3, 4, (4, 4), (3, 3), 1, 1, 1, 1.0),  # all kept, a batch that is no multiple of a vector
    (0, 3, 4, (6, 6), (3, 3), 1, 1, 1, 0.5),  # empty batch
    (2, 8, 16, (6, 5), (5, 3), 1, (3, 1), 1, 0.05),
    (4, 2, 3, (3, 3), (3, 3), 3, 4, 2, 0.7),  # padding beyond the kernel
    (33, 16, 8, (2, 2), (3, 3), 1, 1, 1, 0.1),
    (32, 4, 5, (7, 9), (3, 3), 2, 1, 1, 0.3),  # whole 16 x 16 blocks of the layout copies, and a remainder
    # stride 1, rows of a vector or more and few entries per output channel: the C++ kernel's direct path
    (3, 4, 6, (5, 19), (3, 3), 1, 1, 1, 0.3),
    (2, 3, 4, (4, 33), (3, 5), 1, (1, 2), (1, 2), 0.2),
    (5, 6, 3, (2, 40), (1, 1), 1, 0, 1, 0.5),
    (3, 4, 5, (10, 11), (1, 1), (3, 2), 0, 1, 0.5),  # strided 1x1: run at stride 1 on a slice of x
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch,cin,cout,spatial,kernel,stride,padding,dilation,density", CASES_2D)
def test_sparse_conv2d_matches_dense(backend, batch, cin, cout, spatial, kernel, stride, padding, dilation,
                                     density):
    x, w, mask, b = _inputs(batch, cin, cout, spatial, kernel, density, seed=batch + cin + cout)
    _check_against_dense(F.conv2d, ops.sparse_conv2d, x, w, mask, b, backend, kernel_size=kernel, stride=stride,
                         padding=padding, dilation=dilation)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch,cin,cout,length,kernel,stride,padding,dilation,density", [
    (3, 1, 25, 40, 5, 2, 1, 1, 0.5),
    (5, 25, 25, 19, 3, 2, 1, 1, 0.1),
    (2, 4, 3, 13, 3, 1, 3, 3, 0.6),
    (1, 7, 2, 5, 1, 1, 0, 1, 1.0),
    (0, 2, 2, 6, 3, 1, 0, 1, 0.5),
    (4, 3, 5, 40, 3, 1, 1, 1, 0.3),  # the C++ kernel's direct path
    (3, 4, 5, 21, 1, 2, 0, 1, 0.5),  # strided 1x1
])
def test_sparse_conv1d_matches_dense(backend, batch, cin, cout, length, kernel, stride, padding, dilation, density):
    x, w, mask, b = _inputs(batch, cin, cout, (length,), (kernel,), density, seed=length)
    _check_against_dense(F.conv1d, ops.sparse_conv1d, x, w, mask, b, backend, stride=stride, padding=padding,
                         dilation=dilation)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_conv_with_empty_output_channels(backend):
    x, w, mask, b = _inputs(16, 5, 6, (7, 6), (3, 3), 0.4, seed=7)
    mask[::2] = False  # output channels 0, 2, 4 keep nothing, 1, 3, 5 keep some
    _check_against_dense(F.conv2d, ops.sparse_conv2d, x, w, mask, b, backend, kernel_size=3, stride=2, padding=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_conv_nothing_kept_gives_the_bias(backend):
    x, w, _, b = _inputs(2, 3, 4, (5, 5), (3, 3), 0.0)
    mask = torch.zeros(w.shape, dtype=torch.bool)
    sw = ops.to_sparse(w.reshape(4, -1), mask.reshape(4, -1))
    xs = x.clone().requires_grad_()
    y = ops.sparse_conv2d(xs, sw, b, kernel_size=3, padding=1, backend=backend)
    torch.testing.assert_close(y, b.view(1, 4, 1, 1).expand(2, 4, 5, 5))
    y.sum().backward()
    assert torch.equal(xs.grad, torch.zeros_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 2)])
def test_sparse_conv2d_gradcheck(backend, stride, padding, dilation):
    x, w, mask, b = _inputs(2, 3, 4, (6, 5), (3, 2), 0.5, dtype=torch.float64, seed=5)
    sw = ops.to_sparse(w.reshape(4, -1), mask.reshape(4, -1))
    x, values, b = (t.clone().requires_grad_() for t in (x, sw.values, b))
    assert torch.autograd.gradcheck(
        lambda x, v, b: ops.sparse_conv2d(x, sw.with_values(v), b, kernel_size=(3, 2), stride=stride,
                                          padding=padding, dilation=dilation, backend=backend), (x, values, b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_conv2d_gradcheck_wide_rows(backend):
    """Rows of more than one float64 vector at stride 1 and low density: the C++ kernel's direct path."""
    x, w, mask, b = _inputs(2, 3, 4, (3, 10), (3, 2), 0.3, dtype=torch.float64, seed=8)
    sw = ops.to_sparse(w.reshape(4, -1), mask.reshape(4, -1))
    x, values, b = (t.clone().requires_grad_() for t in (x, sw.values, b))
    assert torch.autograd.gradcheck(
        lambda x, v, b: ops.sparse_conv2d(x, sw.with_values(v), b, kernel_size=(3, 2), padding=(1, 2),
                                          backend=backend), (x, values, b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_conv1d_gradcheck(backend):
    x, w, mask, b = _inputs(3, 2, 3, (9,), (3,), 0.6, dtype=torch.float64, seed=6)
    sw = ops.to_sparse(w.reshape(3, -1), mask.reshape(3, -1))
    x, values, b = (t.clone().requires_grad_() for t in (x, sw.values, b))
    assert torch.autograd.gradcheck(
        lambda x, v, b: ops.sparse_conv1d(x, sw.with_values(v), b, stride=2, padding=1, backend=backend),
        (x, values, b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_conv_double_backward_is_refused(backend):
    x, w, mask, _ = _inputs(2, 3, 4, (5, 5), (3, 3), 0.5, dtype=torch.float64)
    sw = ops.to_sparse(w.reshape(4, -1), mask.reshape(4, -1))
    x, values = x.requires_grad_(), sw.values.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="sparse_conv2d: double backward"):
        torch.autograd.gradgradcheck(
            lambda x, v: ops.sparse_conv2d(x, sw.with_values(v), kernel_size=3, padding=1, backend=backend),
            (x, values))


def test_sparse_conv_bad_input_names_the_argument():
    x, w, mask, b = _inputs(2, 3, 4, (5, 5), (3, 3), 0.5)
    sw = ops.to_sparse(w.reshape(4, -1), mask.reshape(4, -1))
    with pytest.raises(AttributeError, match="no attribute 'check'"):  # a dense weight: Python's own error
        ops.sparse_conv2d(x, w, kernel_size=3)
    with pytest.raises(ValueError, match="sparse_weight"):
        ops.sparse_conv2d(x, sw, kernel_size=2)
    with pytest.raises(ValueError, match="x"):
        ops.sparse_conv2d(x[0], sw, kernel_size=3)
    with pytest.raises(ValueError, match="x"):
        ops.sparse_conv2d(x[:, :, :2], sw, kernel_size=3)
    with pytest.raises(ValueError, match="stride"):
        ops.sparse_conv2d(x, sw, kernel_size=3, stride=0)
    with pytest.raises(ValueError, match="padding"):
        ops.sparse_conv2d(x, sw, kernel_size=3, padding=(1, 1, 1))
    with pytest.raises(ValueError, match="dilation"):
        ops.sparse_conv2d(x, sw, kernel_size=3, dilation=-1)
    with pytest.raises(ValueError, match=r"kernel_size: expected an int >= 1 or 2 such ints, got 3.0"):
        ops.sparse_conv2d(x, sw, kernel_size=3.0)
    with pytest.raises(ValueError, match="bias"):
        ops.sparse_conv2d(x, sw, b[:3], kernel_size=3)
    with pytest.raises(TypeError, match="sparse_weight.values"):
        ops.sparse_conv2d(x.double(), sw, kernel_size=3)
    with pytest.raises(ValueError, match="sparse_weight"):  # 36 columns are no multiple of 5 channels
        ops.sparse_conv1d(torch.randn(2, 5, 7), ops.to_sparse(w.reshape(4, -1), mask.reshape(4, -1)))


def test_sparse_conv_under_torch_compile():
    x, w, mask, b = _inputs(2, 3, 4, (6, 6), (3, 3), 0.5)
    sw = ops.to_sparse(w.reshape(4, -1), mask.reshape(4, -1))
    values = sw.values.clone().requires_grad_()

    def step(x, values, b):
        return ops.sparse_conv2d(x, sw.with_values(values), b, kernel_size=3, stride=2, padding=1).square().sum()

    compiled = torch.compile(step, backend="aot_eager")  # SparseWeight's structure check runs eagerly
    loss = compiled(x, values, b)
    loss.backward()
    wd = (w * mask).requires_grad_()
    expected = F.conv2d(x, wd, b, stride=2, padding=1).square().sum()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(values.grad, wd.grad[mask])


PATHS_CASES = [  # batch, in, out, (h, w), (kh, kw), stride, padding, dilation, density; column stride 1 or 2
    (3, 4, 5, (7, 19), (3, 3), 1, 1, 1, 0.5),
    (2, 3, 4, (5, 33), (3, 5), 1, (2, 0), (1, 2), 0.4),
    (17, 8, 6, (1, 40), (1, 5), 1, (0, 2), 1, 0.6),  # a Conv1d as height 1
    (2, 2, 3, (3, 16), (3, 3), 1, 0, 1, 1.0),  # all kept, rows of exactly one vector
    (4, 3, 2, (20, 17), (1, 1), 1, 0, 1, 0.7),
    (1, 3, 2, (4, 5), (3, 3), 1, 4, 2, 0.7),  # padding beyond the kernel, rows shorter than a vector
    (2, 3, 4, (3, 130), (3, 3), 1, 2, 1, 0.3),  # more than 8 vectors per row: several column tiles
    (0, 3, 4, (6, 20), (3, 3), 1, 1, 1, 0.5),  # empty batch
    (2, 3, 4, (6, 20), (3, 3), 1, 1, 1, 0.0),  # nothing kept
    (3, 4, 5, (9, 37), (3, 3), 2, 1, 1, 0.5),  # stride 2: every other column of x gathered into a vector
    (2, 3, 4, (7, 70), (3, 5), (3, 2), (2, 0), (1, 2), 0.4),
    (5, 2, 3, (1, 41), (1, 5), (1, 2), (0, 2), 1, 0.6),
    (33, 4, 3, (8, 33), (3, 3), 2, 0, 1, 1.0),
]


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,cin,cout,spatial,kernel,stride,padding,dilation,density", PATHS_CASES)
def test_cpp_kernel_paths_match_reference(dtype, batch, cin, cout, spatial, kernel, stride, padding, dilation,
                                          density):
    """Both C++ kernels, forced (path 1: batch-last, 2: direct), against the plain-torch reference."""
    from panning import _C
    from panning.ops import reference

    x, w, mask, b = _inputs(batch, cin, cout, spatial, kernel, density, dtype=dtype, seed=batch + cout)
    sw = ops.to_sparse(w.reshape(cout, -1), mask.reshape(cout, -1))
    geometry = [list(v) if isinstance(v, tuple) else [v] * 2 for v in (kernel, stride, padding, dilation)]
    expected = reference.sparse_conv_fwd(x, sw, b, *geometry)
    dy = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    expected_dx, expected_dvalues = reference.sparse_conv_bwd(dy, x, sw, *geometry, True, True)
    tolerance = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else {}
    for path in (1, 2):
        y, _ = _C.sparse_conv_fwd(x, sw.crow_indices, sw.col_indices, sw.values, *geometry, b, False, path)
        dx, dvalues = _C.sparse_conv_bwd(dy, x, sw.crow_indices, sw.col_indices, sw.values, *geometry, True, True,
                                         None, path)
        torch.testing.assert_close(y, expected, **tolerance)
        torch.testing.assert_close(dx, expected_dx, **tolerance)
        torch.testing.assert_close(dvalues, expected_dvalues, **tolerance)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built here")
def test_cpp_direct_path_reads_only_the_window():
    """An infinite input column enters only the outputs and weight gradients whose window covers it; a vector lane
    beyond the output row must not multiply it (0 * inf would be NaN)."""
    from panning import _C

    x, w, mask, _ = _inputs(2, 3, 4, (4, 20), (1, 3), 0.5, seed=9)
    mask[:, :, :, 0] = True  # every (out, in) pair keeps its tap kw = 0, which never reads column 19
    x[:, :, :, 19] = float("inf")
    sw = ops.to_sparse(w.reshape(4, -1), mask.reshape(4, -1))
    dy = torch.randn(2, 4, 4, 18, generator=torch.Generator().manual_seed(3))
    _, dvalues = _C.sparse_conv_bwd(dy, x, sw.crow_indices, sw.col_indices, sw.values, [1, 3], [1, 1], [0, 0],
                                    [1, 1], False, True, None, 2)
    expected = torch.einsum("borc,birc->oi", dy, x[:, :, :, :18])  # tap kw = 0 reads columns 0..17
    torch.testing.assert_close(dvalues[sw.col_indices % 3 == 0], expected.flatten(), rtol=1e-5, atol=1e-4)
    assert not torch.isfinite(dvalues[sw.col_indices % 3 == 2]).any()  # tap kw = 2 reads column 19


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ extension is not built here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cin,spatial,kernel,stride,padding,density", [
    (8, (32, 32), (3, 3), (1, 1), (1, 1), 0.01),  # few entries per output channel on a wide plane
    (8, (32, 32), (3, 3), (1, 1), (1, 1), 0.6),  # many
    (8, (4, 4), (3, 3), (1, 1), (1, 1), 0.01),  # rows shorter than a vector
    (8, (32, 64), (3, 3), (2, 2), (1, 1), 0.01),  # stride 2
    (8, (32, 64), (1, 1), (2, 2), (0, 0), 0.05),  # strided 1x1: run at stride 1 on the slice
    (8, (1, 80), (1, 3), (1, 1), (0, 1), 0.02),  # a Conv1d (height 1)
])
def test_direct_path_names_the_kernel_the_op_runs(dtype, cin, spatial, kernel, stride, padding, density):
    """ops.sparse_conv.direct_path (what panning.nn's cost model reads) says which of the two C++ kernels the op
    runs: the weight gradient it computes equals bit for bit the one of the kernel forced to that path (the two
    paths sum it in different orders)."""
    from panning import _C
    from panning.ops.sparse_conv import direct_path

    cout, conv1d = 16, spatial[0] == 1
    x, w, mask, _ = _inputs(2, cin, cout, spatial, kernel, density, dtype=dtype, seed=cin)
    mask.view(-1)[0] = True  # keep at least one weight
    sw = ops.to_sparse(w.reshape(cout, -1), mask.reshape(cout, -1))
    values = sw.values.clone().requires_grad_()
    sw = ops.SparseWeight(sw.shape, sw.crow_indices, sw.col_indices, values)
    if conv1d:
        y = ops.sparse_conv1d(x.squeeze(2), sw, kernel_size=kernel[1], stride=stride[1], padding=padding[1],
                              backend="cpp").unsqueeze(2)
        taken = direct_path(x.squeeze(2).shape, dtype, cout, values.numel(), kernel_size=kernel[1:],
                            stride=stride[1:], padding=padding[1:], dilation=(1,))
    else:
        y = ops.sparse_conv2d(x, sw, kernel_size=kernel, stride=stride, padding=padding, backend="cpp")
        taken = direct_path(x.shape, dtype, cout, values.numel(), kernel_size=kernel, stride=stride,
                            padding=padding, dilation=(1, 1))
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    y.backward(dy)
    xs, forced_stride = (x[:, :, ::stride[0], ::stride[1]], [1, 1]) if kernel == (1, 1) else (x, list(stride))
    forced = {path: _C.sparse_conv_bwd(dy, xs.contiguous(), sw.crow_indices, sw.col_indices, values.detach(),
                                       list(kernel), forced_stride, list(padding), [1, 1], False, True, None,
                                       path)[1] for path in (1, 2)}
    assert not torch.equal(forced[1], forced[2])  # the case tells the paths apart
    assert torch.equal(values.grad, forced[2 if taken else 1])
