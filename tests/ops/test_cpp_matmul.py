"""C++ (panning._C) saliency, masked linear and compressed sparse linear against the reference backend.

tests/ops/test_ops.py runs the generic contract over every backend; this file covers what is specific to the
compiled kernels: odd and empty sizes, both float types, gradchecks through cpp, thread-count determinism and
precision over large offsets.
"""
import pytest
import torch

from panning import ops

FLOATS = (torch.float32, torch.float64)


def _close(a, b, dtype):
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, b, **tol)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------- saliency


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("k,n,b", [(3, 10007, 4), (1, 1, 1), (2, 0, 3), (4, 70001, 1)])
def test_saliency_matches_reference(dtype, k, n, b):
    g = _gen(k * 1000 + n)
    indices = torch.randn(k, n, generator=g, dtype=dtype) * torch.rand(k, 1, generator=g, dtype=dtype) * 5
    weights = torch.rand(b, k, generator=g, dtype=torch.float64)
    _close(ops.saliency(indices, weights, backend="cpp"), ops.saliency(indices, weights, backend="reference"), dtype)


def test_saliency_constant_index_contributes_zero():
    indices = torch.stack([torch.full((1000,), 3.5), torch.randn(1000, generator=_gen(1))])
    weights = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    out = ops.saliency(indices, weights, backend="cpp")
    assert torch.equal(out[0], torch.zeros(1000))
    _close(out, ops.saliency(indices, weights, backend="reference"), torch.float32)


def test_saliency_does_not_depend_on_the_thread_count():
    g = _gen(2)
    indices = torch.randn(3, 300_001, generator=g) * 7 + 2
    weights = torch.rand(2, 3, generator=g, dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.saliency(indices, weights, backend="cpp")
        torch.set_num_threads(2)
        two = ops.saliency(indices, weights, backend="cpp")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_saliency_output_on_huge_pages_matches_reference():
    # An output of >= 8 MB is allocated on huge pages (csrc/cpu/output.cpp).
    g = _gen(4)
    indices = torch.randn(2, 1_100_003, generator=g) * 3 - 1
    weights = torch.rand(2, 2, generator=g, dtype=torch.float64)
    out = ops.saliency(indices, weights, backend="cpp")
    _close(out, ops.saliency(indices, weights, backend="reference"), torch.float32)
    out.fill_(0.0)  # the memory is writable and owned by the tensor
    _close(ops.saliency(indices, weights, backend="cpp"), ops.saliency(indices, weights, backend="reference"),
           torch.float32)


def test_saliency_keeps_precision_under_a_large_offset():
    g = _gen(3)
    indices = torch.randn(2, 1_000_000, generator=g) + 1e4
    weights = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    exact = ops.saliency(indices.double(), weights, backend="reference").float()
    torch.testing.assert_close(ops.saliency(indices, weights, backend="cpp"), exact, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------- masked linear


def _linear(m, i, o, dtype, density, seed):
    g = _gen(seed)
    x = torch.randn(m, i, generator=g, dtype=dtype)
    w = torch.randn(o, i, generator=g, dtype=dtype)
    mask = torch.rand(o, i, generator=g) < density
    b = torch.randn(o, generator=g, dtype=dtype)
    return x, w, mask, b


# in_features < out_features takes the transposed weight-gradient GEMM and its tiled epilogue (odd tiles here).
SHAPES = [(7, 13, 5, 0.3), (0, 9, 4, 0.5), (5, 11, 3, 0.0), (6, 10, 4, 1.0), (300, 70, 33, 0.1), (1, 1, 1, 1.0),
          (8, 5, 37, 0.4), (3, 1, 70, 0.5), (0, 3, 40, 0.5), (9, 33, 65, 0.7)]


def _masked_grads(backend, x, w, mask, b):
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    score = mask.to(x.dtype).requires_grad_()
    y = ops.masked_linear(x, w, score, b, score_grad=True, backend=backend)
    y.backward(torch.cos(torch.arange(y.numel(), dtype=y.dtype)).view_as(y))
    return y, x.grad, w.grad, score.grad, b.grad


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("m,i,o,density", SHAPES)
def test_masked_linear_matches_reference(dtype, m, i, o, density):
    inputs = _linear(m, i, o, dtype, density, seed=m + 31 * i)
    for ours, ref in zip(_masked_grads("cpp", *inputs), _masked_grads("reference", *inputs)):
        _close(ours, ref, dtype)


def test_masked_linear_score_grad_is_the_straight_through_rule():
    x, w, mask, b = _linear(9, 8, 6, torch.float64, 0.5, seed=4)
    dy = torch.randn(9, 6, generator=_gen(5), dtype=torch.float64)
    score = mask.double().requires_grad_()
    ops.masked_linear(x, w, score, b, score_grad=True, backend="cpp").backward(dy)
    _close(score.grad, (dy.t() @ x) * w, torch.float64)


@pytest.mark.parametrize("m,i,o", [(9, 8, 6), (9, 6, 45), (2, 1100, 2000)])  # the last: >= 8 MB outputs
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_masked_linear_gradients_against_the_written_out_rule(m, i, o, mask_dtype):
    # dx = dy (W*M), dW = (dy^T x) * M, dscore = (dy^T x) * W; with the weight frozen (a mask search) and not.
    x, w, mask, b = _linear(m, i, o, torch.float32, 0.5, seed=7 + i)
    dy = torch.randn(m, o, generator=_gen(8))
    w_eff = w * mask
    for frozen in (True, False):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_(not frozen)
        score = mask.float().requires_grad_()
        y = ops.masked_linear(xg, wg, score if mask_dtype != torch.bool else mask, b,
                              score_grad=mask_dtype != torch.bool, backend="cpp")
        _close(y, x @ w_eff.t() + b, torch.float32)
        y.backward(dy)
        _close(xg.grad, dy @ w_eff, torch.float32)
        if not frozen:
            _close(wg.grad, (dy.t() @ x) * mask, torch.float32)
        if mask_dtype != torch.bool:
            _close(score.grad, (dy.t() @ x) * w, torch.float32)


def test_masked_linear_without_gradients_builds_no_graph():
    x, w, mask, b = _linear(5, 4, 7, torch.float32, 0.5, seed=9)
    y = ops.masked_linear(x, w, mask, b, backend="cpp")
    assert y.grad_fn is None and not y.requires_grad
    _close(y, x @ (w * mask).t() + b, torch.float32)
    with torch.no_grad():
        assert ops.masked_linear(x.requires_grad_(), w, mask, b, backend="cpp").grad_fn is None


@pytest.mark.parametrize("i,o", [(5, 3), (3, 7)])  # both weight-gradient layouts
def test_masked_linear_gradcheck(i, o):
    x, w, mask, b = _linear(4, i, o, torch.float64, 0.6, seed=10 + o)
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    fn = lambda x, w, b: ops.masked_linear(x, w, mask, b, backend="cpp")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


# --------------------------------------------------------------------------------------------- sparse linear


def _sparse_grads(backend, sw, x, b):
    x, b, values = x.clone().requires_grad_(), b.clone().requires_grad_(), sw.values.clone().requires_grad_()
    y = ops.sparse_linear(x, sw.with_values(values), b, backend=backend)
    y.backward(torch.sin(torch.arange(y.numel(), dtype=y.dtype)).view_as(y))
    return y, x.grad, values.grad, b.grad


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("m,i,o,density", SHAPES + [(257, 130, 70, 0.05), (300, 65, 17, 0.9)])
def test_sparse_linear_matches_reference(dtype, m, i, o, density):
    x, w, mask, b = _linear(m, i, o, dtype, density, seed=7 * m + i)
    ours, ref = ops.to_sparse(w, mask, backend="cpp"), ops.to_sparse(w, mask, backend="reference")
    assert torch.equal(ours.crow_indices, ref.crow_indices) and torch.equal(ours.col_indices, ref.col_indices)
    assert torch.equal(ours.values, ref.values) and ours.nnz == int(mask.sum())
    for a, r in zip(_sparse_grads("cpp", ours, x, b), _sparse_grads("reference", ref, x, b)):
        _close(a, r, dtype)


# Batches around the kernels' widths: a vector holds 16 floats / 8 doubles with AVX-512 (half that with AVX2), the
# batch is padded to whole vectors, and up to one panel of 8 vectors the backward takes the one-pass small-batch
# path (docs/ops.md).
SMALL_BATCHES = [1, 3, 8, 15, 16, 17, 31, 32, 33, 63, 64, 100, 127, 128, 129]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("m", SMALL_BATCHES)
def test_sparse_linear_batches_around_the_vector_width(dtype, m):
    x, w, mask, b = _linear(m, 70, 45, dtype, 0.3, seed=100 + m)
    sw = ops.to_sparse(w, mask, backend="cpp")
    for a, r in zip(_sparse_grads("cpp", sw, x, b), _sparse_grads("reference", sw, x, b)):
        _close(a, r, dtype)


@pytest.mark.parametrize("m,i,o", [(32, 50, 40), (5, 17, 9), (3, 0, 4), (4, 6, 0)])
@pytest.mark.parametrize("density", [0.0, 1.0])
def test_sparse_linear_small_batch_keeping_nothing_or_everything(m, i, o, density):
    x, w, mask, b = _linear(m, i, o, torch.float32, density, seed=11)
    sw = ops.to_sparse(w, mask, backend="cpp")
    y, dx, dvalues, db = _sparse_grads("cpp", sw, x, b)
    dy = torch.sin(torch.arange(m * o, dtype=x.dtype)).view(m, o)
    dense = w * mask
    _close(y, x @ dense.t() + b, torch.float32)
    _close(dx, dy @ dense, torch.float32)
    _close(dvalues, (dy.t() @ x)[mask], torch.float32)
    _close(db, dy.sum(0), torch.float32)


def test_sparse_linear_small_batch_extreme_values():
    x, w, mask, b = _linear(24, 40, 30, torch.float32, 0.5, seed=12)
    x, w = x * 1e18, w * 1e18  # products near 1e36, sums below float32's 3.4e38
    sw = ops.to_sparse(w, mask, backend="cpp")
    ours = _sparse_grads("cpp", sw, x, b)
    want = _sparse_grads("reference", ops.to_sparse(w.double(), mask), x.double(), b.double())
    for a, r in zip(ours, want):  # float32 sums err relative to their terms' size, not to a cancelled result
        torch.testing.assert_close(a.double(), r, rtol=1e-5, atol=1e-5 * float(r.detach().abs().max()))


def test_sparse_linear_handles_empty_rows_and_columns():
    x, w, mask, b = _linear(70, 96, 40, torch.float32, 0.5, seed=8)
    mask[::3] = False  # empty output rows
    mask[:, 5:70] = False  # a run of unused inputs spanning several column blocks
    sw = ops.to_sparse(w, mask, backend="cpp")
    for a, r in zip(_sparse_grads("cpp", sw, x, b), _sparse_grads("reference", sw, x, b)):
        _close(a, r, torch.float32)


@pytest.mark.parametrize("m", [5, 9, 130])  # one vector, two (padded), the panel of 8 vectors and a remainder
def test_sparse_linear_gradcheck(m):
    x, w, mask, b = _linear(m, 7, 4, torch.float64, 0.5, seed=9)
    sw = ops.to_sparse(w, mask, backend="cpp")
    x, b, values = x.requires_grad_(), b.requires_grad_(), sw.values.clone().requires_grad_()
    fn = lambda x, v, b: ops.sparse_linear(x, sw.with_values(v), b, backend="cpp")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, values, b))


@pytest.mark.parametrize("m,i", [(300, 200), (32, 1500)])  # the small batch splits the input features over threads
def test_sparse_linear_does_not_depend_on_the_thread_count(m, i):
    x, w, mask, b = _linear(m, i, 150, torch.float32, 0.2, seed=10)
    sw = ops.to_sparse(w, mask, backend="cpp")
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(_sparse_grads("cpp", sw, x, b))
    finally:
        torch.set_num_threads(threads)
    for a, r in zip(*results):
        assert torch.equal(a, r)
