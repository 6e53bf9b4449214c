"""Saliency (Triton): normalize K raw indices over the arena and combine them for B weight vectors.

Contract (see `panning.ops.reference.saliency`): `out[b] = sum_k weights[b, k] * |x_k - mean_k| / std_k`
with population statistics in float64, and 0 for an index whose std is 0.

Two passes over the indices, as the op contract asks (docs/ops.md):
1. statistics: every program reduces one tile of one index to (sum, sum of squared deviations
   from the tile mean) in float64, merging its blocks with the exact parallel-variance rule
   M2 = M2_a + M2_b + (mean_b - mean_a)^2 n_a n_b / (n_a + n_b); a small kernel merges the tiles
   of an index the same way. Deviations from nearby means keep the precision that a one-pass
   E[x^2] - E[x]^2 would lose at large means, and float64 sums lose nothing over 2^31 elements.
2. combine: every program reads one tile of each of the K indices once and writes that tile of
   B_block outputs, so the indices are read once per block of B rows.

Also `product_score`, the fused elementwise raw score w * g or |w * g|.
Performance on a GPU is unmeasured (tested under the Triton interpreter only).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._config import accumulator, on_device, width


@triton.jit
def _tile_stats_kernel(indices_ptr, sums_ptr, m2_ptr, n, num_tiles, BLOCK: tl.constexpr, TILE: tl.constexpr):
    """Sum and squared deviations from the mean, in float64, of tile `pid(0)` of index `pid(1)`.

    Blocks of the tile are merged one by one with the parallel-variance rule, so every deviation
    is taken from a nearby mean.
    """
    tile, index = tl.program_id(0), tl.program_id(1)
    row_ptr = indices_ptr + index.to(tl.int64) * n
    first = tile.to(tl.int64) * TILE
    count = tl.full([], 0.0, tl.float64)
    total = tl.full([], 0.0, tl.float64)
    m2 = tl.full([], 0.0, tl.float64)
    for start in range(first, tl.minimum(first + TILE, n), BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < n
        x = tl.load(row_ptr + offs, mask=inside, other=0).to(tl.float64)
        block_count = tl.minimum(n - start, BLOCK).to(tl.float64)
        block_total = tl.sum(x, 0)
        deviation = tl.where(inside, x - block_total / block_count, 0.0)
        gap = block_total / block_count - total / tl.maximum(count, 1.0)
        m2 += tl.sum(deviation * deviation, 0) + gap * gap * (count * block_count / (count + block_count))
        count += block_count
        total += block_total
    tl.store(sums_ptr + index * num_tiles + tile, total)
    tl.store(m2_ptr + index * num_tiles + tile, m2)


@triton.jit
def _merge_stats_kernel(sums_ptr, m2_ptr, mean_ptr, inv_std_ptr, n, num_tiles,
                        TILE: tl.constexpr, MERGE: tl.constexpr):
    """Merge the tile statistics of one index into its mean and 1/std (0 where std is 0)."""
    index = tl.program_id(0)
    base = index * num_tiles
    total = tl.zeros((MERGE,), tl.float64)
    for first in range(0, num_tiles, MERGE):
        tiles = first + tl.arange(0, MERGE)
        total += tl.load(sums_ptr + base + tiles, mask=tiles < num_tiles, other=0)
    mean = tl.sum(total, 0) / n
    m2 = tl.zeros((MERGE,), tl.float64)
    for first in range(0, num_tiles, MERGE):
        tiles = first + tl.arange(0, MERGE)
        live = tiles < num_tiles
        count = tl.maximum(tl.minimum(n - tiles.to(tl.int64) * TILE, TILE), 1).to(tl.float64)
        gap = tl.load(sums_ptr + base + tiles, mask=live, other=0) / count - mean
        m2 += tl.where(live, tl.load(m2_ptr + base + tiles, mask=live, other=0) + count * gap * gap, 0.0)
    std = tl.sqrt(tl.sum(m2, 0) / n)
    tl.store(mean_ptr + index, mean)
    spread = std > 0
    tl.store(inv_std_ptr + index, tl.where(spread, 1.0 / tl.where(spread, std, 1.0), 0.0))


@triton.jit
def _combine_kernel(indices_ptr, weights_ptr, mean_ptr, inv_std_ptr, out_ptr, n, num_indices, rows,
                    ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, TILE_N: tl.constexpr):
    """out[b, i] = sum_k weights[b, k] * |x_k[i] - mean_k| * inv_std_k for one (rows, elements) tile."""
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    inside_b = offs_b < rows
    first = tl.program_id(0).to(tl.int64) * TILE_N
    for start in range(first, tl.minimum(first + TILE_N, n), BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        inside_n = offs_n < n
        acc = tl.zeros((BLOCK_B, BLOCK_N), ACC)
        row_ptr = indices_ptr  # advanced by a row per index: pointer arithmetic stays 64-bit
        for index in range(num_indices):
            x = tl.load(row_ptr + offs_n, mask=inside_n, other=0).to(tl.float64)
            # The subtraction runs in float64: a float32 mean of large values would shift every z.
            z = (tl.abs(x - tl.load(mean_ptr + index)) * tl.load(inv_std_ptr + index)).to(ACC)
            a = tl.load(weights_ptr + offs_b * num_indices + index, mask=inside_b, other=0).to(ACC)
            acc += a[:, None] * z[None, :]
            row_ptr += n
        out = out_ptr + offs_b[:, None].to(tl.int64) * n + offs_n[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=inside_b[:, None] & inside_n[None, :])


@on_device
def saliency(indices: torch.Tensor, weights: torch.Tensor, *, block: int = width(1024, 16384),
             chunks: int = width(16, 1), merge: int = 1024, block_b: int = 4) -> torch.Tensor:
    """(B, N) combined scores of contiguous `indices` (K, N) and float64 `weights` (B, K).

    Every program of either pass covers `block * chunks` elements, `block` at a time.
    """
    (num_indices, n), rows = indices.shape, weights.shape[0]
    out = torch.zeros((rows, n), dtype=indices.dtype, device=indices.device)
    if out.numel() == 0 or num_indices == 0:
        return out
    tile = block * chunks
    num_tiles = triton.cdiv(n, tile)
    sums = torch.empty((num_indices, num_tiles), dtype=torch.float64, device=indices.device)
    m2 = torch.empty_like(sums)
    _tile_stats_kernel[(num_tiles, num_indices)](indices, sums, m2, n, num_tiles, BLOCK=block, TILE=tile)
    mean = torch.empty(num_indices, dtype=torch.float64, device=indices.device)
    inv_std = torch.empty_like(mean)
    _merge_stats_kernel[(num_indices,)](sums, m2, mean, inv_std, n, num_tiles, TILE=tile, MERGE=merge)
    _combine_kernel[(num_tiles, triton.cdiv(rows, block_b))](indices, weights, mean, inv_std, out, n, num_indices,
                                                             rows, ACC=accumulator(indices.dtype), BLOCK_B=block_b,
                                                             BLOCK_N=block, TILE_N=tile)
    return out


@triton.jit
def _product_kernel(weight_ptr, grad_ptr, out_ptr, n, COMPUTE: tl.constexpr, ABSOLUTE: tl.constexpr,
                    BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    # Half types multiply in float32 and round once, as torch does.
    w = tl.load(weight_ptr + offs, mask=inside).to(COMPUTE)
    product = w * tl.load(grad_ptr + offs, mask=inside).to(COMPUTE)
    if ABSOLUTE:
        product = tl.abs(product)
    tl.store(out_ptr + offs, product.to(out_ptr.dtype.element_ty), mask=inside)


@on_device
def product_score(weight: torch.Tensor, grad: torch.Tensor, absolute: bool, *,
                  block: int = width(4096, 16384)) -> torch.Tensor:
    """w * g, or |w * g|, of two contiguous tensors of one shape and dtype, in one pass."""
    out = torch.empty_like(weight)
    if out.numel():
        _product_kernel[(triton.cdiv(out.numel(), block),)](weight, grad, out, out.numel(),
                                                            COMPUTE=accumulator(out.dtype), ABSOLUTE=absolute,
                                                            BLOCK=block)
    return out
