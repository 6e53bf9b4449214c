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


SHAPES = [(7, 13, 5, 0.3), (0, 9, 4, 0.5), (5, 11, 3, 0.0), (6, 10, 4, 1.0), (300, 70, 33, 0.1), (1, 1, 1, 1.0)]


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


def test_masked_linear_gradcheck():
    x, w, mask, b = _linear(4, 5, 3, torch.float64, 0.6, seed=6)
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


def test_sparse_linear_handles_empty_rows_and_columns():
    x, w, mask, b = _linear(70, 96, 40, torch.float32, 0.5, seed=8)
    mask[::3] = False  # empty output rows
    mask[:, 5:70] = False  # a run of unused inputs spanning several column blocks
    sw = ops.to_sparse(w, mask, backend="cpp")
    for a, r in zip(_sparse_grads("cpp", sw, x, b), _sparse_grads("reference", sw, x, b)):
        _close(a, r, torch.float32)


def test_sparse_linear_gradcheck():
    x, w, mask, b = _linear(5, 7, 4, torch.float64, 0.5, seed=9)
    sw = ops.to_sparse(w, mask, backend="cpp")
    x, b, values = x.requires_grad_(), b.requires_grad_(), sw.values.clone().requires_grad_()
    fn = lambda x, v, b: ops.sparse_linear(x, sw.with_values(v), b, backend="cpp")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, values, b))


def test_sparse_linear_does_not_depend_on_the_thread_count():
    x, w, mask, b = _linear(300, 200, 150, torch.float32, 0.2, seed=10)
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
