"""Bad input to the public ops: a clear ValueError/TypeError naming the argument or field, never a crash or
an out-of-bounds read (docs/benchmarks.md describes where each check runs and what it costs).

The compressed format gets a fuzz test: random corruptions of a valid SparseWeight must each raise a clear
error when built, or, when the corruption happens to leave a valid structure, compute what the dense
reference computes from that structure.
"""
from __future__ import annotations

import random

import pytest
import torch

from panning import ops
from panning.ops import checks as tensor_checks, dispatch

CPU = torch.device("cpu")
BACKENDS = [name for name in dispatch.BACKENDS if dispatch.can_run(name, "sparse_linear_fwd", "cpu") is None]


def _valid(seed: int = 0, out: int = 6, inp: int = 9, density: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    mask = torch.rand(out, inp, generator=g) < density
    mask[0, 0] = mask[-1, -1] = True  # at least one kept entry (two where there are two rows)
    sw = ops.to_sparse(w, mask, backend="reference")
    return sw, torch.randn(4, inp, generator=g)


def _dense(shape, crow, col, values):
    """The weight a CSR structure stands for, built entry by entry in Python (independent of the package)."""
    w = torch.zeros(shape, dtype=values.dtype)
    for r in range(shape[0]):
        for p in range(int(crow[r]), int(crow[r + 1])):
            w[r, int(col[p])] = values[p]
    return w


# --------------------------------------------------------------------------------- hand-built SparseWeight

@pytest.mark.parametrize("field,make,error,match", [
    ("col out of range", lambda c, k, v: (c, k.clone().index_fill_(0, torch.tensor([k.numel() - 1]), 10**6), v),
     ValueError, r"col_indices: expected every column index in \[0, 9\)"),
    ("negative col", lambda c, k, v: (c, k.clone().index_fill_(0, torch.tensor([0]), -1), v),
     ValueError, "col_indices"),
    ("crow[-1] > nnz", lambda c, k, v: (torch.cat([c[:-1], c[-1:] + 1000]), k, v),
     ValueError, r"crow_indices: expected crow_indices\[-1\] =="),
    ("crow[-1] < nnz", lambda c, k, v: (torch.cat([c[:-1], c[-1:] - 1]), k, v), ValueError, "crow_indices"),
    ("crow[0] != 0", lambda c, k, v: (c + 1, k, v), ValueError, r"crow_indices: expected crow_indices\[0\] == 0"),
    ("non-monotone crow", lambda c, k, v: (torch.cat([c[:1], c[2:3], c[1:2], c[3:]]), k, v),
     ValueError, "crow_indices: expected non-decreasing"),
    ("crow too short", lambda c, k, v: (c[:-1], k, v), ValueError, "crow_indices: expected 7 entries"),
    ("values too long", lambda c, k, v: (c, k, torch.cat([v, v[:1]])), ValueError, "values: expected shape"),
    ("col and values shorter", lambda c, k, v: (c, k[:-1], v[:-1]), ValueError, "crow_indices"),
    ("int32 crow", lambda c, k, v: (c.int(), k, v), TypeError, "crow_indices: expected a 1-D int64 tensor"),
    ("float col", lambda c, k, v: (c, k.double(), v), TypeError, "col_indices: expected a 1-D int64 tensor"),
    ("integer values", lambda c, k, v: (c, k, v.long()), TypeError, "values: expected a floating"),
    ("2-D col", lambda c, k, v: (c, k.view(1, -1), v), TypeError, "col_indices: expected a 1-D int64 tensor"),
    ("values not a tensor", lambda c, k, v: (c, k, v.tolist()), TypeError, "values: expected a torch.Tensor"),
    ("unsorted row", lambda c, k, v: (c, k.flip(0), v), ValueError, "col_indices: expected strictly increasing"),
    ("structure on meta", lambda c, k, v: (c, k.to("meta"), v), ValueError, "col_indices: on meta"),
])
def test_hand_built_sparse_weight_is_rejected_naming_the_field(field, make, error, match):
    sw, _ = _valid()
    crow, col, values = make(sw.crow_indices, sw.col_indices, sw.values)
    with pytest.raises(error, match=match):
        ops.SparseWeight(sw.shape, crow, col, values)


def test_duplicate_column_in_a_row_is_rejected():
    crow, col = torch.tensor([0, 2, 2]), torch.tensor([1, 1])
    with pytest.raises(ValueError, match="col_indices: expected strictly increasing"):
        ops.SparseWeight((2, 3), crow, col, torch.ones(2))


@pytest.mark.parametrize("shape", [(6,), (6, -9), (6.0, 9), "6x9", (True, 9)])
def test_bad_shape_is_rejected(shape):
    sw, _ = _valid()
    with pytest.raises(ValueError, match="shape"):
        ops.SparseWeight(shape, sw.crow_indices, sw.col_indices, sw.values)


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_corruption_after_building_is_caught_before_the_kernel(backend):
    sw, x = _valid(1)
    ops.sparse_linear(x, sw, backend=backend)
    sw.col_indices[-1] = 10**9  # the version counter of col_indices moves: the structure is checked again
    with pytest.raises(ValueError, match="col_indices"):
        ops.sparse_linear(x, sw, backend=backend)
    sw, x = _valid(2)
    sw.crow_indices[-1] += 10**6
    with pytest.raises(ValueError, match="crow_indices"):
        ops.sparse_linear(x, sw, backend=backend)
    sw, x = _valid(3)
    sw.values.data = sw.values.data[:-1]  # values given other storage: the op checks them with its operands
    with pytest.raises(ValueError, match=r"sparse_weight.values: expected shape"):
        ops.sparse_linear(x, sw, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_valid_hand_built_structure_runs_and_matches_the_entries(backend):
    crow, col, values = torch.tensor([0, 2, 2, 3]), torch.tensor([0, 4, 2]), torch.tensor([1.5, -2.0, 3.0])
    sw = ops.SparseWeight((3, 5), crow, col, values)
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ops.sparse_linear(x, sw, backend=backend), x @ _dense((3, 5), crow, col, values).t())


def _corrupt(rng: random.Random, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, in_features: int):
    """One random corruption of a CSR structure: an index overwritten by a nearby, extreme or random value,
    an entry dropped or added, or two entries swapped."""
    crow, col, values = crow.clone(), col.clone(), values.clone()
    kind = rng.randrange(6)
    extreme = rng.choice([-1, -(2**62), 2**62, in_features, in_features + 1, 2**31, rng.randrange(-50, 50)])
    if kind == 0:
        crow[rng.randrange(crow.numel())] = extreme
    elif kind == 1 and col.numel():
        col[rng.randrange(col.numel())] = extreme
    elif kind == 2 and col.numel():
        p = rng.randrange(col.numel())
        col, values = torch.cat([col[:p], col[p + 1:]]), torch.cat([values[:p], values[p + 1:]])
    elif kind == 3:
        p = rng.randrange(col.numel() + 1)
        col = torch.cat([col[:p], torch.tensor([rng.randrange(in_features)]), col[p:]])
        values = torch.cat([values[:p], torch.tensor([1.0]), values[p:]])
    elif kind == 4 and col.numel() > 1:
        p, q = rng.sample(range(col.numel()), 2)
        col[p], col[q] = col[q].clone(), col[p].clone()
    else:
        r = rng.randrange(1, crow.numel())
        crow[r] = crow[r] + rng.choice([-1, 1])
    return crow, col, values


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzzed_structures_raise_a_clear_error_or_compute_the_dense_product(backend):
    rng = random.Random(1234)
    rejected = 0
    for trial in range(300):
        sw, x = _valid(trial % 7, out=rng.randrange(2, 8), inp=rng.randrange(4, 12), density=rng.random())
        crow, col, values = _corrupt(rng, sw.crow_indices, sw.col_indices, sw.values, sw.shape[1])
        try:
            bad = ops.SparseWeight(sw.shape, crow, col, values)
        except (ValueError, TypeError) as error:
            assert str(error).split(":")[0] in ("crow_indices", "col_indices", "values"), error
            rejected += 1
            continue
        # Still a valid structure (e.g. a swap inside one row that kept the order): it must compute its product.
        torch.testing.assert_close(ops.sparse_linear(x, bad, backend=backend),
                                   x @ _dense(sw.shape, crow, col, values).t())
    assert rejected > 200  # nearly every corruption breaks the structure


# --------------------------------------------------------------------------------- saliency

@pytest.mark.parametrize("backend", [n for n in dispatch.BACKENDS if dispatch.can_run(n, "saliency", "cpu") is None])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, 7, 99_999])
def test_saliency_rejects_non_finite_indices(backend, bad, where):
    indices = torch.randn(3, 100_000, generator=torch.Generator().manual_seed(0))
    indices[1, where] = bad
    with pytest.raises(ValueError, match="indices.*NaN or inf"):
        ops.saliency(indices, torch.ones(2, 3), backend=backend)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_saliency_rejects_non_finite_weights(bad):
    with pytest.raises(ValueError, match="weights: contains NaN or inf"):
        ops.saliency(torch.randn(2, 10), torch.tensor([[1.0, bad]]))


def test_saliency_accepts_huge_but_finite_float64_indices():
    # The squares overflow float64 but nothing is NaN or inf: not an input error.
    indices = torch.tensor([[1e200, -1e200, 0.0, 5.0]], dtype=torch.float64)
    for backend in ("reference", "cpp"):
        assert ops.saliency(indices, torch.ones(1), backend=backend).shape == (4,)


def test_saliency_sequence_is_stacked_by_torch_which_names_the_odd_one():
    with pytest.raises(RuntimeError, match=r"equal size, but got \[10\] at entry 0 and \[9\] at entry 2"):
        ops.saliency([torch.randn(10), torch.randn(10), torch.randn(9)], torch.ones(3))
    with pytest.raises(RuntimeError, match=r"equal size, but got \[10\] at entry 0 and \[2, 5\] at entry 1"):
        ops.saliency([torch.randn(10), torch.randn(2, 5)], torch.ones(2))
    with pytest.raises(RuntimeError, match="non-empty"):
        ops.saliency([], torch.ones(0))
    # Vectors of two dtypes are promoted, as torch.stack does (the statistics are float64 anyway).
    mixed = ops.saliency([torch.randn(10), torch.randn(10, dtype=torch.float64)], torch.ones(2))
    assert mixed.dtype == torch.float64 and mixed.shape == (10,)


# --------------------------------------------------------------------------------- masked linear

@pytest.mark.parametrize("backend", [n for n in dispatch.BACKENDS if dispatch.can_run(n, "masked_linear_fwd", "cpu")
                                     is None])
def test_masked_linear_with_no_input_features_is_the_bias(backend):
    x = torch.randn(3, 0, requires_grad=True)
    w = torch.randn(4, 0, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    y = ops.masked_linear(x, w, torch.ones(4, 0, dtype=torch.bool), b, backend=backend)
    assert torch.equal(y, b.detach().expand(3, 4))
    y.sum().backward()
    assert x.grad.shape == (3, 0) and w.grad.shape == (4, 0) and torch.equal(b.grad, torch.full((4,), 3.0))
    batched = ops.masked_linear(torch.randn(2, 5, 0), w, torch.ones(4, 0), backend=backend)
    assert torch.equal(batched, torch.zeros(2, 5, 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_linear_with_no_input_features_is_the_bias(backend):
    sw = ops.SparseWeight((4, 0), torch.zeros(5, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                          torch.zeros(0))
    b = torch.randn(4)
    assert torch.equal(ops.sparse_linear(torch.randn(3, 0), sw, b, backend=backend), b.expand(3, 4))


def test_masked_linear_mask_on_another_device_names_the_mask():
    w = torch.randn(4, 3)
    with pytest.raises(ValueError, match="mask: on meta, but weight is on cpu"):
        ops.masked_linear(torch.randn(2, 3), w, torch.ones(4, 3, dtype=torch.bool, device="meta"))


# --------------------------------------------------------------------------------- operands

def test_operands_names_the_operand_that_breaks_each_rule():
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    tensor_checks.operands(x=x, weight=w, bias=None, dims={"weight": (2,)})  # an absent bias is not checked
    cases = [
        (TypeError, r"^weight: expected a torch.Tensor, got list", dict(x=x, weight=[1.0])),
        (ValueError, r"^weight: expected a 2-D tensor, got shape \(12,\)", dict(x=x, weight=w.view(-1))),
        (TypeError, r"^x: expected a floating-point tensor, got torch.int64", dict(x=x.long(), weight=w)),
        (TypeError, r"^weight: dtype torch.float64 does not match x's torch.float32", dict(x=x, weight=w.double())),
        (ValueError, r"^weight: on meta, but x is on cpu", dict(x=x, weight=w.to("meta"))),
    ]
    for error, match, named in cases:
        with pytest.raises(error, match=match):
            tensor_checks.operands(dims={"weight": (2,)}, **named)
    with pytest.raises(ValueError, match=r"^grad: expected shape \(4, 3\), got \(3, 4\)"):
        tensor_checks.operands(weight=w, grad=w.T, same_shape=True)
    with pytest.raises(TypeError, match="^weights: expected a floating-point tensor"):
        tensor_checks.operands(indices=x, weights=torch.ones(3, dtype=torch.int64), one_dtype=False)
