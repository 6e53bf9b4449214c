"""The op contract (docs/ops.md), checked on every backend that can run here against the reference."""
from __future__ import annotations

import pytest
import torch

from panning import ops
from panning.ops import dispatch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def runnable(op: str) -> list[str]:
    """Backends that can run `op` on this machine's device (the reference always can)."""
    return [name for name in dispatch.BACKENDS if dispatch.can_run(name, op, DEVICE.type) is None]


def sorted_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """An independent oracle: rank by (score desc, index asc) with a lexicographic sort in float64."""
    n = scores.numel()
    key = scores.double().cpu()
    order = sorted(range(n), key=lambda i: (-key[i].item(), i))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[:k]] = True
    return mask


# ---------------------------------------------------------------------------------------------- top-k

@pytest.mark.parametrize("backend", runnable("topk_mask"))
@pytest.mark.parametrize("n,k", [(1, 0), (1, 1), (17, 5), (300, 0), (300, 300), (1000, 123)])
def test_topk_global_matches_independent_oracle(backend, n, k):
    g = torch.Generator().manual_seed(n * 31 + k)
    scores = torch.randn(n, generator=g).round(decimals=1)  # rounding makes many ties
    mask = ops.topk_mask(scores.to(DEVICE), k, backend=backend).cpu()
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert int(mask.sum()) == k
    assert torch.equal(mask, sorted_topk_mask(scores, k))


@pytest.mark.parametrize("backend", runnable("topk_mask"))
def test_topk_special_values(backend):
    scores = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 0.0, -0.0, 1e-45, -1e-45,
                           3.4e38, -3.4e38, float("inf"), 0.0])
    for k in range(scores.numel() + 1):
        got = ops.topk_mask(scores.to(DEVICE), k, backend=backend).cpu()
        assert torch.equal(got, sorted_topk_mask(scores, k)), k


@pytest.mark.parametrize("backend", runnable("topk_mask"))
def test_topk_all_equal_keeps_lowest_indices(backend):
    scores = torch.full((257,), 2.5, device=DEVICE)
    mask = ops.topk_mask(scores, 100, backend=backend).cpu()
    assert mask[:100].all() and not mask[100:].any()


@pytest.mark.parametrize("backend", runnable("topk_mask"))
def test_topk_batched_rows_and_segments(backend):
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (3, 40), generator=g).float()
    rows = ops.topk_mask(scores.to(DEVICE), 7, backend=backend).cpu()
    for b in range(3):
        assert torch.equal(rows[b], sorted_topk_mask(scores[b], 7))

    offsets = torch.tensor([0, 0, 10, 11, 40])  # includes an empty segment
    k = torch.tensor([0, 3, 1, 29])
    seg = ops.topk_mask(scores[0].to(DEVICE), k, offsets=offsets, backend=backend).cpu()
    for s in range(4):
        lo, hi = offsets[s].item(), offsets[s + 1].item()
        assert torch.equal(seg[lo:hi], sorted_topk_mask(scores[0, lo:hi], k[s].item()))

    per_row_k = torch.tensor([[0, 1, 1, 5], [0, 10, 0, 29], [0, 0, 1, 0]])
    both = ops.topk_mask(scores.to(DEVICE), per_row_k, offsets=offsets, backend=backend).cpu()
    for b in range(3):
        for s in range(4):
            lo, hi = offsets[s].item(), offsets[s + 1].item()
            assert torch.equal(both[b, lo:hi], sorted_topk_mask(scores[b, lo:hi], per_row_k[b, s].item()))


@pytest.mark.parametrize("backend", runnable("topk_mask"))
def test_topk_empty(backend):
    assert ops.topk_mask(torch.empty(0, device=DEVICE), 0, backend=backend).shape == (0,)
    assert ops.topk_mask(torch.empty(4, 0, device=DEVICE), 0, backend=backend).shape == (4, 0)


def test_topk_bad_input_names_the_argument():
    scores = torch.randn(10)
    with pytest.raises(ValueError, match=r"^k: expected counts in \[0, segment size\]; segment sizes \[10\], "
                                         r"got \[11\]"):
        ops.topk_mask(scores, 11)
    with pytest.raises(ValueError, match="k: expected counts in"):
        ops.topk_mask(scores, -1)
    with pytest.raises(ValueError, match="k: expected integer counts"):
        ops.topk_mask(scores, 2.5)
    with pytest.raises(ValueError, match="k: expected integer counts"):
        ops.topk_mask(scores, True)
    with pytest.raises(ValueError, match="scores: contains NaN"):
        ops.topk_mask(torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(TypeError, match="scores"):
        ops.topk_mask(torch.arange(10), 3)
    with pytest.raises(ValueError, match="scores"):
        ops.topk_mask(torch.randn(2, 2, 2), 1)
    with pytest.raises(ValueError, match="offsets: expected 1-D integer bounds, non-decreasing from 0 to 10"):
        ops.topk_mask(scores, [1, 1], offsets=[0, 5, 9])
    with pytest.raises(ValueError, match="offsets: expected 1-D integer bounds"):
        ops.topk_mask(scores, [1, 1], offsets=[0.0, 5.0, 10.0])
    with pytest.raises(ValueError, match="k: expected counts in"):
        ops.topk_mask(scores, [6, 1], offsets=[0, 5, 10])
    with pytest.raises(ValueError, match=r"k: expected shape \(2,\) or \(1, 2\)"):
        ops.topk_mask(scores, [1, 1, 1], offsets=[0, 5, 10])


def test_nan_is_rejected_by_every_backend():
    for backend in runnable("topk_mask"):
        with pytest.raises(ValueError, match="scores: contains NaN"):
            ops.topk_mask(torch.tensor([1.0, float("nan"), 2.0], device=DEVICE), 1, backend=backend)


# ---------------------------------------------------------------------------------------------- saliency

def plain_saliency(indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    z = [(x.double() - x.double().mean()).abs() / x.double().std(correction=0) for x in indices]
    return (weights.double() @ torch.stack(z)).to(indices.dtype)


@pytest.mark.parametrize("backend", runnable("saliency"))
@pytest.mark.parametrize("k,n,b", [(1, 1, 1), (3, 1000, 1), (3, 777, 4), (2, 5, 3)])
def test_saliency_matches_formula(backend, k, n, b):
    g = torch.Generator().manual_seed(k + n + b)
    indices = torch.randn(k, n, generator=g) * torch.logspace(-3, 3, k).unsqueeze(1)
    weights = torch.rand(b, k, generator=g)
    got = ops.saliency(indices.to(DEVICE), weights.to(DEVICE), backend=backend).cpu()
    want = plain_saliency(indices, weights) if n > 1 else torch.zeros(b, n)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", runnable("saliency"))
def test_saliency_single_weight_vector_constant_index_and_empty(backend):
    indices = torch.stack([torch.full((50,), 3.0), torch.arange(50.0)]).to(DEVICE)
    got = ops.saliency(indices, torch.tensor([2.0, 1.0], device=DEVICE), backend=backend).cpu()
    assert got.shape == (50,)
    torch.testing.assert_close(got, plain_saliency(indices[1:].cpu(), torch.ones(1, 1))[0])
    assert ops.saliency(torch.empty(3, 0, device=DEVICE), torch.ones(2, 3, device=DEVICE),
                        backend=backend).shape == (2, 0)


def test_saliency_large_offset_keeps_precision():
    # A float32 accumulation of the mean of 1e6 values near 1e4 would lose the unit-scale spread.
    x = 1e4 + torch.randn(1_000_000, generator=torch.Generator().manual_seed(1))
    for backend in runnable("saliency"):
        got = ops.saliency(x.unsqueeze(0).to(DEVICE), torch.ones(1, device=DEVICE), backend=backend).cpu()
        torch.testing.assert_close(got, plain_saliency(x.unsqueeze(0), torch.ones(1, 1))[0], rtol=1e-4, atol=1e-4)


def test_saliency_bad_input():
    with pytest.raises(ValueError, match="weights"):
        ops.saliency(torch.randn(3, 10), torch.rand(2, 4))
    with pytest.raises(TypeError, match="indices"):
        ops.saliency(torch.arange(10).view(1, 10), torch.rand(1))
    with pytest.raises(ValueError, match="indices"):
        ops.saliency(torch.randn(10), torch.rand(1))


@pytest.mark.parametrize("backend", runnable("product_score"))
def test_product_score(backend):
    w, g = torch.randn(7, 9), torch.randn(7, 9)
    got = ops.product_score(w.to(DEVICE), g.to(DEVICE), backend=backend).cpu()
    assert torch.equal(got, (w * g).abs())
    got = ops.product_score(w.to(DEVICE), g.to(DEVICE), absolute=False, backend=backend).cpu()
    assert torch.equal(got, w * g)
    with pytest.raises(ValueError, match="grad"):
        ops.product_score(w, g[:, :3], backend=backend)


# ---------------------------------------------------------------------------------------------- matmuls

def _linear_inputs(m, i, o, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, i, generator=g, dtype=dtype)
    w = torch.randn(o, i, generator=g, dtype=dtype)
    mask = torch.rand(o, i, generator=g) > 0.6
    b = torch.randn(o, generator=g, dtype=dtype)
    return x, w, mask, b


@pytest.mark.parametrize("backend", runnable("masked_linear_fwd"))
@pytest.mark.parametrize("m,i,o", [(0, 3, 4), (1, 1, 1), (5, 7, 3), (33, 65, 17)])
def test_masked_linear_forward_backward(backend, m, i, o):
    x, w, mask, b = _linear_inputs(m, i, o, torch.float32)
    x, w, b = (t.to(DEVICE).requires_grad_() for t in (x, w, b))
    mask_st = mask.to(DEVICE, torch.float32).requires_grad_()
    y = ops.masked_linear(x, w, mask_st, b, score_grad=True, backend=backend)
    dy = torch.randn_like(y)
    y.backward(dy)
    w_eff = w.detach() * mask.to(DEVICE)
    torch.testing.assert_close(y, x.detach() @ w_eff.t() + b.detach())
    dw_eff = dy.t() @ x.detach()
    torch.testing.assert_close(x.grad, dy @ w_eff)
    torch.testing.assert_close(w.grad, dw_eff * mask.to(DEVICE))
    torch.testing.assert_close(mask_st.grad, dw_eff * w.detach())
    torch.testing.assert_close(b.grad, dy.sum(0))


@pytest.mark.parametrize("backend", runnable("masked_linear_fwd"))
def test_linear_custom_ops_take_strided_views(backend):
    """The custom ops a compiled or exported graph calls directly (without the public wrappers' copies) accept
    non-contiguous tensors: a ViT's head reads its class token, x[:, 0]."""
    x, w, mask, b = _linear_inputs(6, 5, 4)
    tokens = torch.randn(6, 3, 5, dtype=x.dtype)
    tokens[:, 0] = x
    x, b = tokens.to(DEVICE)[:, 0], b.to(DEVICE)
    w_t, mask_t = (t.t().contiguous().to(DEVICE).t() for t in (w, mask))  # column-major
    assert not (x.is_contiguous() or w_t.is_contiguous() or mask_t.is_contiguous())
    expected = x @ (w_t * mask_t).t() + b
    y, _ = torch.ops.panning.masked_linear(x, w_t, mask_t, b, backend)
    torch.testing.assert_close(y, expected)
    dy = torch.randn(6, 8, dtype=x.dtype, device=DEVICE)[:, ::2]
    dx, dw, _ = torch.ops.panning.masked_linear_backward(dy, x, w_t, mask_t, w_t.new_empty(0), True, True, False,
                                                         backend)
    torch.testing.assert_close(dx, dy @ (w_t * mask_t))
    torch.testing.assert_close(dw, (dy.t() @ x) * mask_t)
    sparse = ops.to_sparse(w_t, mask_t)
    if backend in runnable("sparse_linear_fwd"):
        values = torch.stack([sparse.values, sparse.values], 1)[:, 0]  # a strided view of the values
        y = torch.ops.panning.sparse_linear(x, sparse.crow_indices, sparse.col_indices, values, 5, b, backend)
        torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("backend", runnable("masked_linear_fwd"))
def test_masked_linear_gradcheck(backend):
    x, w, mask, b = _linear_inputs(4, 6, 3)
    x, w, b = (t.to(DEVICE).requires_grad_() for t in (x, w, b))
    mask = mask.to(DEVICE)
    # The mask's own gradient is a straight-through estimate (checked against its formula above), so
    # gradcheck covers the differentiable inputs: x, weight and bias, with a bool and a float mask.
    assert torch.autograd.gradcheck(lambda x, w, b: ops.masked_linear(x, w, mask, b, backend=backend), (x, w, b))
    assert torch.autograd.gradcheck(
        lambda x, w: ops.masked_linear(x, w, mask.double(), None, backend=backend), (x, w))


@pytest.mark.parametrize("backend", runnable("masked_linear_fwd"))
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "custom_op"])
def test_masked_linear_gradgradcheck(backend, compiled, monkeypatch):
    """Second derivatives (GraSP's Hessian-gradient product differentiates the backward) in x, weight and bias,
    through the eager function and through the custom op that torch.compile runs."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiled)
    x, w, mask, b = _linear_inputs(4, 6, 3, seed=5)
    x, w, b = (t.to(DEVICE).requires_grad_() for t in (x, w, b))
    mask = mask.to(DEVICE)
    assert torch.autograd.gradgradcheck(lambda x, w, b: ops.masked_linear(x, w, mask, b, backend=backend),
                                        (x, w, b))
    assert torch.autograd.gradgradcheck(
        lambda x, w: ops.masked_linear(x, w, mask.double(), None, backend=backend), (x, w))


@pytest.mark.parametrize("backend", runnable("masked_linear_fwd"))
def test_masked_linear_batched_input(backend):
    x, w, mask, b = _linear_inputs(6, 5, 4, torch.float32)
    x3 = x.view(2, 3, 5).to(DEVICE)
    y = ops.masked_linear(x3, w.to(DEVICE), mask.to(DEVICE), b.to(DEVICE), backend=backend)
    assert y.shape == (2, 3, 4)
    torch.testing.assert_close(y.reshape(6, 4).cpu(), x @ (w * mask).t() + b)


def test_masked_linear_bad_input():
    x, w, mask, b = _linear_inputs(2, 3, 4, torch.float32)
    with pytest.raises(ValueError, match="mask"):
        ops.masked_linear(x, w, mask[:, :2])
    with pytest.raises(TypeError, match="mask"):
        ops.masked_linear(x, w, mask.int())
    with pytest.raises(ValueError, match="x"):
        ops.masked_linear(x[:, :2], w, mask)
    with pytest.raises(ValueError, match="bias"):
        ops.masked_linear(x, w, mask, b[:3])
    with pytest.raises(TypeError, match="weight"):
        ops.masked_linear(x, w.double(), mask)
    with pytest.raises(TypeError, match="^mask: expected a floating-point tensor, got torch.bool$"):
        ops.masked_linear(x, w, mask, score_grad=True)  # a bool mask cannot carry the scores' gradient


@pytest.mark.parametrize("backend", runnable("sparse_linear_fwd"))
@pytest.mark.parametrize("m,i,o,density", [(0, 3, 4, 0.5), (1, 1, 1, 1.0), (9, 13, 5, 0.3), (20, 64, 33, 0.05),
                                           (3, 8, 6, 0.0)])
def test_sparse_linear_matches_dense(backend, m, i, o, density):
    g = torch.Generator().manual_seed(m + i + o)
    x = torch.randn(m, i, generator=g).to(DEVICE).requires_grad_()
    w = torch.randn(o, i, generator=g).to(DEVICE)
    mask = (torch.rand(o, i, generator=g) < density).to(DEVICE)
    b = torch.randn(o, generator=g).to(DEVICE).requires_grad_()
    sw = ops.to_sparse(w, mask, backend=backend)
    assert sw.nnz == int(mask.sum())
    assert torch.equal(sw.mask(), mask)
    values = sw.values.clone().requires_grad_()
    y = ops.sparse_linear(x, sw.with_values(values), b, backend=backend)
    dy = torch.randn_like(y)
    y.backward(dy)
    w_eff = w * mask
    torch.testing.assert_close(y, x.detach() @ w_eff.t() + b.detach())
    torch.testing.assert_close(x.grad, dy @ w_eff)
    torch.testing.assert_close(values.grad, (dy.t() @ x.detach())[mask])
    torch.testing.assert_close(b.grad, dy.sum(0))


@pytest.mark.parametrize("backend", runnable("sparse_linear_fwd"))
def test_sparse_linear_gradcheck(backend):
    x, w, mask, b = _linear_inputs(4, 6, 5, seed=3)
    sw = ops.to_sparse(w.to(DEVICE), mask.to(DEVICE), backend=backend)
    x, values, b = (t.to(DEVICE).requires_grad_() for t in (x, sw.values.clone(), b))
    assert torch.autograd.gradcheck(
        lambda x, v, b: ops.sparse_linear(x, sw.with_values(v), b, backend=backend), (x, values, b))


@pytest.mark.parametrize("backend", runnable("sparse_linear_fwd"))
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "custom_op"])
def test_sparse_linear_gradgradcheck(backend, compiled, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiled)
    x, w, mask, b = _linear_inputs(4, 6, 5, seed=4)
    sw = ops.to_sparse(w.to(DEVICE), mask.to(DEVICE), backend=backend)
    x, values, b = (t.to(DEVICE).requires_grad_() for t in (x, sw.values.clone(), b))
    assert torch.autograd.gradgradcheck(
        lambda x, v, b: ops.sparse_linear(x, sw.with_values(v), b, backend=backend), (x, values, b))


def test_sparse_linear_bad_input():
    w = torch.randn(4, 3)
    sw = ops.to_sparse(w, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(AttributeError, match="no attribute 'check'"):  # a dense weight: Python's own error
        ops.sparse_linear(torch.randn(2, 3), w)
    with pytest.raises(ValueError, match="x"):
        ops.sparse_linear(torch.randn(2, 4), sw)
    with pytest.raises(TypeError, match="mask"):
        ops.to_sparse(w, torch.ones(4, 3))


# ---------------------------------------------------------------------------------------------- dispatch

def test_backends_report_and_explicit_requests(monkeypatch):
    report = ops.backends()
    assert set(report) == set(dispatch.BACKENDS)
    assert report["reference"]["available"]
    for info in report.values():
        assert isinstance(info["reason"], str) and info["reason"]
    with pytest.raises(ValueError, match="backend"):
        ops.topk_mask(torch.randn(3), 1, backend="fortran")
    monkeypatch.setenv("PANNING_BACKEND", "nope")
    with pytest.raises(ValueError, match="PANNING_BACKEND"):
        ops.topk_mask(torch.randn(3), 1)
    monkeypatch.setenv("PANNING_BACKEND", "reference")
    assert dispatch.resolve("topk_mask", torch.device("cpu")) == "reference"


def test_unavailable_backend_raises_instead_of_falling_back():
    missing = [name for name, info in ops.backends().items() if not info["available"]]
    for name in missing:
        with pytest.raises(ops.BackendError, match=name):
            ops.topk_mask(torch.randn(3), 1, backend=name)


def test_compiled_cpu_backend_is_built_and_the_default_where_it_measured_faster():
    report = ops.backends()
    info = report["cpp"]
    assert info["available"], info["reason"]
    assert info["ops"], "panning._C implements no op"
    for op in info["ops"]:
        (first, *_), why = dispatch.order(op, "cpu")
        assert dispatch.resolve(op, torch.device("cpu")) == first, op
        assert f"{dispatch.public_op(op)} on cpu" in report[first]["default_for"], op
        assert report[first]["default_for"][f"{dispatch.public_op(op)} on cpu"] == why
    # Every CPU op's default comes from a measurement, and a forward and its backward take the same backend.
    for op in dispatch.OPS:
        assert ("cpu", dispatch.public_op(op)) in dispatch.MEASURED, op
    for op in ("masked_linear", "sparse_linear"):
        cpu = torch.device("cpu")
        assert dispatch.resolve(f"{op}_fwd", cpu) == dispatch.resolve(f"{op}_bwd", cpu)


@pytest.mark.slow
def test_ops_work_under_torch_compile():
    x, w, mask, b = _linear_inputs(4, 6, 3, torch.float32)
    w = w.requires_grad_()

    def step(x, w, mask, b):
        return ops.masked_linear(x, w, mask, b).sum()

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    loss = compiled(x, w, mask, b)
    loss.backward()
    torch.testing.assert_close(loss, step(x, w, mask, b))
    torch.testing.assert_close(w.grad, torch.ones(4, 3).t() @ x * mask)
