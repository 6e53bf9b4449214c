"""The Triton backend against the reference, through the public ops (and the kernels directly where
small block sizes are needed to cross tile boundaries).

Without a GPU, tests/conftest.py selects the Triton interpreter and these run on CPU tensors; on a
GPU they run the compiled kernels on CUDA tensors. Shapes are small because the interpreter is slow,
and deliberately not multiples of the block sizes.
"""
from __future__ import annotations

import pytest
import torch

from panning import ops
from panning.kernels import saliency as saliency_kernels, topk as topk_kernels
from panning.ops import reference

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
HALF_TYPES = (torch.float16, torch.bfloat16)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def both(op, *args, **kwargs):
    """(triton result, reference result) of the public op `op` on the same arguments."""
    return op(*args, backend="triton", **kwargs), op(*args, backend="reference", **kwargs)


def test_triton_backend_is_available():
    info = ops.backends()["triton"]
    assert info["available"], info["reason"]
    assert DEVICE.type in info["devices"]
    assert set(info["ops"]) == {"saliency", "product_score", "topk_mask", "masked_linear_fwd", "masked_linear_bwd",
                                "to_sparse", "sparse_linear_fwd", "sparse_linear_bwd"}


# ---------------------------------------------------------------------------------------------- top-k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF_TYPES])
@pytest.mark.parametrize("n,k", [(1, 0), (1, 1), (777, 0), (777, 777), (777, 300)])
def test_topk_global_with_ties(dtype, n, k):
    scores = torch.randn(n, generator=gen(n + k)).round(decimals=1).to(DEVICE, dtype)  # many ties
    got, want = both(ops.topk_mask, scores, k)
    assert torch.equal(got, want)
    assert int(got.sum()) == k


@pytest.mark.slow
def test_topk_special_values():
    values = [0.0, -0.0, float("inf"), -float("inf"), 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38,
              float("inf"), 0.0, -float("inf"), 1.0]
    scores = torch.tensor(values, device=DEVICE)
    for k in range(scores.numel() + 1):
        got, want = both(ops.topk_mask, scores, k)
        assert torch.equal(got, want), k


def test_topk_all_equal_keeps_lowest_indices():
    for dtype in (torch.float32, torch.float64):
        scores = torch.full((301,), -2.5, device=DEVICE, dtype=dtype)
        got = ops.topk_mask(scores, 123, backend="triton")
        assert got[:123].all() and not got[123:].any()


@pytest.mark.slow
def test_topk_batched_rows_and_many_segments():
    g = gen(1)
    sizes = torch.randint(0, 40, (16,), generator=g)
    sizes[[0, 7, 15]] = 0  # empty segments, including the first and the last
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
    n = int(offsets[-1])
    scores = torch.randint(-3, 4, (2, n), generator=g).float().to(DEVICE)
    k = (torch.rand(2, 16, generator=g) * (sizes + 1)).long()  # per row and segment, 0..size
    got, want = both(ops.topk_mask, scores, k, offsets=offsets)
    assert torch.equal(got, want)
    got, want = both(ops.topk_mask, scores[1], k[1], offsets=offsets)  # one row
    assert torch.equal(got, want)
    got, want = both(ops.topk_mask, scores, 17)  # top-k of every row
    assert torch.equal(got, want)


def test_topk_nan_is_rejected_by_the_kernel():
    for position in (0, 500):
        scores = torch.randn(501, generator=gen(2))
        scores[position] = float("nan")
        with pytest.raises(ValueError, match="scores: contains NaN"):
            ops.topk_mask(scores.to(DEVICE), 10, backend="triton")


@pytest.mark.parametrize("dtype,digit_bits", [(torch.float32, 8), (torch.float32, 11), (torch.float64, 12),
                                              (torch.bfloat16, 8)])
@pytest.mark.slow
def test_topk_kernel_ties_across_many_tiles(dtype, digit_bits):
    """Small tiles: equal scores spread over many tiles and segments need the tile prefix sums."""
    g = gen(digit_bits)
    scores = torch.randint(0, 3, (600,), generator=g).to(DEVICE, dtype)
    offsets = torch.tensor([0, 0, 1, 233, 234, 550, 600], device=DEVICE)
    k = torch.tensor([0, 1, 100, 0, 200, 50], device=DEVICE)
    mask, nan_count = topk_kernels.topk_mask(scores, offsets, k, digit_bits=digit_bits, block=16, chunks=2)
    assert int(nan_count) == 0
    assert torch.equal(mask, reference.topk_mask(scores, offsets, k))


# ---------------------------------------------------------------------------------------------- saliency


@pytest.mark.parametrize("k,n,b", [(1, 1, 1), (3, 1001, 5), (2, 7, 3)])
def test_saliency(k, n, b):
    g = gen(k * n + b)
    indices = (torch.randn(k, n, generator=g) * torch.logspace(-3, 3, k).unsqueeze(1) + 10).to(DEVICE)
    weights = torch.rand(b, k, generator=g).to(DEVICE)
    got, want = both(ops.saliency, indices, weights)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_saliency_constant_index_empty_and_float64():
    indices = torch.stack([torch.full((50,), 0.1), torch.arange(50.0), torch.zeros(50)]).to(DEVICE)
    got, want = both(ops.saliency, indices, torch.tensor([2.0, 1.0, 3.0], device=DEVICE))
    torch.testing.assert_close(got, want)
    got, want = both(ops.saliency, indices.double(), torch.rand(4, 3, device=DEVICE))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert ops.saliency(torch.empty(3, 0, device=DEVICE), torch.ones(2, 3, device=DEVICE),
                        backend="triton").shape == (2, 0)


@pytest.mark.slow
def test_saliency_kernel_many_tiles_keeps_precision():
    """Small tiles and merges cross every boundary; the large offset tests the float64 statistics."""
    g = gen(3)
    indices = (torch.randn(3, 3001, generator=g) + torch.tensor([[1e4], [0.0], [-7.0]])).to(DEVICE)
    weights = torch.rand(5, 3, generator=g, dtype=torch.float64).to(DEVICE)
    got = saliency_kernels.saliency(indices, weights, block=64, chunks=3, merge=4, block_b=2)
    torch.testing.assert_close(got, reference.saliency(indices, weights), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_product_score(dtype):
    g = gen(4)
    w, grad = (torch.randn(13, 7, generator=g).to(DEVICE, dtype) for _ in range(2))
    for absolute in (True, False):
        got, want = both(ops.product_score, w, grad, absolute=absolute)
        assert torch.equal(got, want)


# ---------------------------------------------------------------------------------------------- masked linear


def _linear(m, i, o, dtype, seed, density=0.4):
    g = gen(seed)
    x = torch.randn(m, i, generator=g).to(DEVICE, dtype)
    w = torch.randn(o, i, generator=g).to(DEVICE, dtype)
    mask = (torch.rand(o, i, generator=g) < density).to(DEVICE)
    bias = torch.randn(o, generator=g).to(DEVICE, dtype)
    return x, w, mask, bias


def _tolerance(dtype):
    return dict(rtol=2e-2, atol=5e-2) if dtype in HALF_TYPES else {}


@pytest.mark.parametrize("m,i,o", [(0, 5, 3), (1, 1, 1), (33, 65, 17), (70, 40, 50)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_linear_forward_and_gradients(m, i, o, dtype):
    x, w, mask, bias = _linear(m, i, o, dtype, seed=m + i + o)
    results = {}
    for backend in ("triton", "reference"):
        leaves = [t.clone().requires_grad_() for t in (x, w, bias, mask.to(dtype))]
        y = ops.masked_linear(*leaves[:2], leaves[3], leaves[2], score_grad=True, backend=backend)
        y.backward(torch.linspace(-1, 1, y.numel(), device=DEVICE, dtype=dtype).view_as(y))
        results[backend] = [y.detach()] + [t.grad for t in leaves]
    for got, want in zip(results["triton"], results["reference"]):
        torch.testing.assert_close(got, want)


def test_masked_linear_single_gradients_and_bool_mask():
    x, w, mask, bias = _linear(9, 21, 11, torch.float32, seed=5)
    for needs in ((True, False), (False, True)):
        grads = {}
        for backend in ("triton", "reference"):
            xx, ww = x.clone().requires_grad_(needs[0]), w.clone().requires_grad_(needs[1])
            ops.masked_linear(xx, ww, mask, None, backend=backend).sum().backward()
            grads[backend] = xx.grad if needs[0] else ww.grad
        torch.testing.assert_close(grads["triton"], grads["reference"])


@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_masked_linear_half(dtype):
    x, w, mask, bias = _linear(19, 37, 23, dtype, seed=6)
    got, want = both(ops.masked_linear, x, w, mask, bias)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want, **_tolerance(dtype))


@pytest.mark.slow
def test_masked_linear_gradcheck():
    x, w, mask, bias = _linear(4, 6, 3, torch.float64, seed=7)
    x, w, bias = (t.requires_grad_() for t in (x, w, bias))
    assert torch.autograd.gradcheck(lambda x, w, b: ops.masked_linear(x, w, mask, b, backend="triton"), (x, w, bias))


# ---------------------------------------------------------------------------------------------- sparse linear


@pytest.mark.parametrize("m,i,o,density", [(0, 4, 3, 0.5), (1, 1, 1, 1.0), (40, 100, 19, 0.5), (5, 33, 9, 0.05),
                                           (3, 8, 6, 0.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_linear_forward_and_gradients(m, i, o, density, dtype):
    x, w, mask, bias = _linear(m, i, o, dtype, seed=m + i + o, density=density)
    mask[o // 2] = False  # an empty row
    sw, sw_ref = both(ops.to_sparse, w, mask)
    for got, want in zip((sw.crow_indices, sw.col_indices, sw.values),
                         (sw_ref.crow_indices, sw_ref.col_indices, sw_ref.values)):
        assert got.dtype == want.dtype and torch.equal(got, want)
    results = {}
    for backend in ("triton", "reference"):
        xx, values, bb = x.clone().requires_grad_(), sw.values.clone().requires_grad_(), bias.clone().requires_grad_()
        y = ops.sparse_linear(xx, sw.with_values(values), bb, backend=backend)
        y.backward(torch.linspace(-1, 1, y.numel(), device=DEVICE, dtype=dtype).view_as(y))
        results[backend] = (y.detach(), xx.grad, values.grad, bb.grad)
    for got, want in zip(results["triton"], results["reference"]):
        torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_sparse_linear_bfloat16_and_gradcheck():
    x, w, mask, bias = _linear(7, 30, 12, torch.bfloat16, seed=8)
    sw = ops.to_sparse(w, mask, backend="triton")
    got, want = both(ops.sparse_linear, x, sw, bias)
    torch.testing.assert_close(got, want, **_tolerance(torch.bfloat16))

    x, w, mask, bias = _linear(4, 6, 5, torch.float64, seed=9)
    sw = ops.to_sparse(w, mask, backend="triton")
    x, values, bias = (t.clone().requires_grad_() for t in (x, sw.values, bias))
    assert torch.autograd.gradcheck(
        lambda x, v, b: ops.sparse_linear(x, sw.with_values(v), b, backend="triton"), (x, values, bias))
