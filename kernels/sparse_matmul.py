"""Compressed sparse linear (Triton): CSR weight, forward, backward, and compression.

Contract (see `panning.ops.reference.to_sparse`, `sparse_linear_fwd`, `sparse_linear_bwd`): W (out, in)
is kept as CSR over output rows (int64 crow/col, values in CSR order).

- forward y = x W^T: one program per tile of output rows and batch rows walks the rows' nonzeros and
  gathers the matching rows of x^T (a transposed copy of x, so every gather reads contiguous batch
  elements);
- dx = dy W: the same kernel on the transposed structure (CSR of W^T, built by a stable sort of the
  column indices, with a permutation into the values): a gather, never a scatter, so dx is
  deterministic without atomics;
- dvalues = (dy^T x) at the kept positions only (SDDMM): one program per block of nonzeros takes the
  dot product of a row of dy^T and a row of x^T over the batch;
- compression: per-row counts, a prefix sum for crow, then a per-row stream compaction.

Accumulation is float32 (float64 for float64). CUDA-core FMAs only (no tensor cores): this format
pays off at high sparsity; a blocked format may win below that. Performance on a GPU is unmeasured
(tested under the Triton interpreter only).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._config import accumulator, on_device


@triton.jit
def _csr_matmul_kernel(crow_ptr, col_ptr, values_ptr, perm_ptr, bt_ptr, bias_ptr, out_ptr, rows, M,
                       stride_out_m, stride_out_r,
                       HAS_PERM: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_NZ: tl.constexpr):
    """out[m, r] = sum over the nonzeros j of CSR row r of values[perm[j]] * bt[col[j], m] (+ bias[r]).

    bt is (columns, M) contiguous; perm is the identity when HAS_PERM is false.
    """
    offs_r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_m = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    live_r, live_m = offs_r < rows, offs_m < M
    start = tl.load(crow_ptr + offs_r, mask=live_r, other=0)
    length = tl.load(crow_ptr + offs_r + 1, mask=live_r, other=0) - start
    acc = tl.zeros((BLOCK_R, BLOCK_M), ACC)
    for j0 in range(0, tl.max(length, 0), BLOCK_NZ):
        step = j0 + tl.arange(0, BLOCK_NZ)
        live = step[None, :] < length[:, None]
        nz = start[:, None] + step[None, :]
        cols = tl.load(col_ptr + nz, mask=live, other=0)
        if HAS_PERM:
            nz = tl.load(perm_ptr + nz, mask=live, other=0)
        vals = tl.load(values_ptr + nz, mask=live, other=0).to(ACC)
        b = tl.load(bt_ptr + cols[:, :, None] * M + offs_m[None, None, :],
                    mask=live[:, :, None] & live_m[None, None, :], other=0).to(ACC)
        acc += tl.sum(vals[:, :, None] * b, 1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_r, mask=live_r, other=0).to(ACC)[:, None]
    out = out_ptr + offs_m[None, :] * stride_out_m + offs_r[:, None] * stride_out_r
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=live_r[:, None] & live_m[None, :])


@triton.jit
def _sddmm_kernel(row_ptr, col_ptr, at_ptr, bt_ptr, out_ptr, nnz, M,
                  ACC: tl.constexpr, BLOCK_NZ: tl.constexpr, BLOCK_M: tl.constexpr):
    """out[j] = dot(at[row[j], :], bt[col[j], :]) over M for a block of nonzeros j."""
    nz = tl.program_id(0).to(tl.int64) * BLOCK_NZ + tl.arange(0, BLOCK_NZ)
    live = nz < nnz
    rows = tl.load(row_ptr + nz, mask=live, other=0)
    cols = tl.load(col_ptr + nz, mask=live, other=0)
    acc = tl.zeros((BLOCK_NZ,), ACC)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        inside = live[:, None] & (offs_m[None, :] < M)
        a = tl.load(at_ptr + rows[:, None] * M + offs_m[None, :], mask=inside, other=0).to(ACC)
        b = tl.load(bt_ptr + cols[:, None] * M + offs_m[None, :], mask=inside, other=0).to(ACC)
        acc += tl.sum(a * b, 1)
    tl.store(out_ptr + nz, acc.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def _row_count_kernel(mask_ptr, counts_ptr, cols, BLOCK: tl.constexpr):
    """Kept entries of one row of a (rows, cols) bool mask."""
    row = tl.program_id(0).to(tl.int64)
    total = tl.zeros((BLOCK,), tl.int64)
    for c0 in range(0, cols, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        total += tl.load(mask_ptr + row * cols + offs, mask=offs < cols, other=0).to(tl.int64)
    tl.store(counts_ptr + row, tl.sum(total, 0))


@triton.jit
def _compress_kernel(weight_ptr, mask_ptr, crow_ptr, col_ptr, values_ptr, cols, BLOCK: tl.constexpr):
    """Write the column indices and values of the kept entries of one row, in column order."""
    row = tl.program_id(0).to(tl.int64)
    written = tl.load(crow_ptr + row)
    for c0 in range(0, cols, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        inside = offs < cols
        keep = tl.load(mask_ptr + row * cols + offs, mask=inside, other=0).to(tl.int64)
        slot = written + tl.cumsum(keep, 0) - keep
        kept = keep != 0
        tl.store(col_ptr + slot, offs.to(tl.int64), mask=kept)
        tl.store(values_ptr + slot, tl.load(weight_ptr + row * cols + offs, mask=kept), mask=kept)
        written += tl.sum(keep, 0)


def _block_m(M: int) -> int:
    return min(max(triton.next_power_of_2(M), 2), 32)


def _csr_matmul(crow, col, values, perm, bt, bias, out, stride_out_m, stride_out_r, *,
                block_r: int = 16, block_nz: int = 16):
    rows, M = crow.numel() - 1, bt.shape[1]
    block_m = _block_m(M)
    grid = (triton.cdiv(rows, block_r), triton.cdiv(M, block_m))
    _csr_matmul_kernel[grid](crow, col, values, perm if perm is not None else col, bt,
                             bias if bias is not None else values, out, rows, M, stride_out_m, stride_out_r,
                             HAS_PERM=perm is not None, HAS_BIAS=bias is not None, ACC=accumulator(out.dtype),
                             BLOCK_R=block_r, BLOCK_M=block_m, BLOCK_NZ=block_nz)


@on_device
def to_sparse(weight: torch.Tensor, mask: torch.Tensor, *, block: int = 1024):
    """(crow, col, values) of the kept entries of a contiguous (out, in) weight and bool mask.

    The number of kept entries sizes the outputs, so this reads it on the host (one synchronization).
    """
    rows, cols = weight.shape
    crow = torch.zeros(rows + 1, dtype=torch.int64, device=weight.device)
    if rows and cols:
        counts = torch.empty(rows, dtype=torch.int64, device=weight.device)
        _row_count_kernel[(rows,)](mask, counts, cols, BLOCK=block)
        torch.cumsum(counts, 0, out=crow[1:])
    nnz = int(crow[-1])
    col = torch.empty(nnz, dtype=torch.int64, device=weight.device)
    values = torch.empty(nnz, dtype=weight.dtype, device=weight.device)
    if nnz:
        _compress_kernel[(rows,)](weight, mask, crow, col, values, cols, BLOCK=block)
    return crow, col, values


@on_device
def sparse_linear_fwd(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
    """y = x @ W^T + bias for contiguous x (M, in) and W given as CSR (crow, col, values)."""
    M, rows = x.shape[0], crow.numel() - 1
    y = torch.empty((M, rows), dtype=x.dtype, device=x.device)
    if y.numel():
        _csr_matmul(crow, col, values, None, x.t().contiguous(), bias, y, rows, 1)
    return y


@on_device
def sparse_linear_bwd(dy: torch.Tensor, x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
                      values: torch.Tensor, need_dx: bool, need_dvalues: bool):
    """(dx, dvalues) of y = x @ W^T: dx = dy @ W, dvalues = (dy^T x) at the kept entries; None where not needed."""
    (M, cols), rows, nnz = x.shape, crow.numel() - 1, col.numel()
    if nnz == 0 or M == 0:  # nothing to gather: dx is zero, dvalues is zero (or empty)
        return torch.zeros_like(x) if need_dx else None, torch.zeros_like(values) if need_dvalues else None
    dx = torch.empty_like(x) if need_dx else None
    dvalues = torch.empty_like(values) if need_dvalues else None
    dy_t = dy.t().contiguous()
    row_of = torch.repeat_interleave(torch.arange(rows, device=col.device), crow.diff(), output_size=nnz)
    if need_dx:
        sorted_col, perm = torch.sort(col, stable=True)  # CSR order is row-major: this is CSC order
        crow_t = torch.searchsorted(sorted_col, torch.arange(cols + 1, device=col.device))
        _csr_matmul(crow_t, row_of[perm], values, perm, dy_t, None, dx, cols, 1)
    if need_dvalues:
        block_nz, block_m = 64, _block_m(M)
        _sddmm_kernel[(triton.cdiv(nnz, block_nz),)](row_of, col, dy_t, x.t().contiguous(), dvalues, nnz, M,
                                                     ACC=accumulator(values.dtype), BLOCK_NZ=block_nz, BLOCK_M=block_m)
    return dx, dvalues
