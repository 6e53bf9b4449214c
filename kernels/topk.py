"""Exact segmented top-k masks by radix select (Triton).

Contract (see `panning.ops.reference.topk_mask`): in every segment `scores[offsets[s]:offsets[s+1]]`
keep exactly `k[s]` elements, the largest, and among equal scores the lower index; -0.0 equals +0.0.

Algorithm: no sort and no copy of the scores; extra memory is O(segments * 2^digit_bits + tiles).

1. Every score maps to an order-preserving unsigned key of its own width (16, 32 or 64 bits): zeros
   are made +0, negative floats get all bits flipped, others the sign bit set, so comparing keys as
   unsigned integers compares the scores.
2. Radix select, most significant digit first. A round histograms one digit of the keys that still
   match the threshold's known higher digits (one pass over the scores); then one program per
   segment picks the digit of the k-th largest key and how many keys below that digit are still
   wanted. After the last round every segment knows its threshold key t exactly, and how many of
   the keys equal to t to keep (`remaining`).
3. Mask: key > t is kept; key == t is kept when fewer than `remaining` equal keys precede it in its
   segment. The ranks come from per-tile counts of equal keys and a prefix sum over the tiles; the
   counting pass reads nothing where every equal key is kept (the common case for real scores).

Work is cut into tiles that never straddle a segment. The tile map (the segment of every tile) is
computed on the device, so neither the segment sizes nor k travel to the host: no synchronization.
NaN scores are counted in the first pass; the caller decides to raise.

Performance on a GPU is unmeasured (written and tested under the Triton interpreter only):
`digit_bits`, `block` and `chunks` are the knobs that bench/bench_gpu.py is meant to tune.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._config import on_device, width

# torch dtype -> (key width, signed and unsigned Triton integer types of that width, torch state dtype)
_KEYS = {
    torch.float16: (16, tl.int16, tl.uint16, torch.int16),
    torch.bfloat16: (16, tl.int16, tl.uint16, torch.int16),
    torch.float32: (32, tl.int32, tl.uint32, torch.int32),
    torch.float64: (64, tl.int64, tl.uint64, torch.int64),
}


@triton.jit
def _order_keys(x, SINT: tl.constexpr, UINT: tl.constexpr, BITS: tl.constexpr):
    """Unsigned keys that sort like the floats `x` (with -0.0 == +0.0)."""
    MAXPOS: tl.constexpr = (1 << (BITS - 1)) - 1
    SIGN: tl.constexpr = -(1 << (BITS - 1))
    bits = x.to(SINT, bitcast=True)
    bits = tl.where((bits & MAXPOS) == 0, 0, bits)
    # Negative: flip the magnitude bits (larger magnitude sorts lower); then move the sign bit so
    # that the signed order becomes the unsigned order.
    return (bits ^ ((bits >> (BITS - 1)) & MAXPOS) ^ SIGN).to(UINT, bitcast=True)


@triton.jit
def _tile(pid, tile_segment_ptr, tile_first_ptr, offsets_ptr, num_segments, TILE: tl.constexpr):
    """(segment, start, end) of tile `pid`; the spare tiles at the end of the grid get start == end."""
    segment = tl.load(tile_segment_ptr + pid)
    live = segment < num_segments
    segment = tl.minimum(segment, num_segments - 1)
    start = tl.load(offsets_ptr + segment) + (pid - tl.load(tile_first_ptr + segment)) * TILE
    end = tl.minimum(start + TILE, tl.load(offsets_ptr + segment + 1))
    return segment, start, tl.where(live, end, start)


@triton.jit
def _histogram_kernel(scores_ptr, tile_segment_ptr, tile_first_ptr, offsets_ptr, prefix_ptr, hist_ptr, nan_ptr,
                      num_segments,
                      SINT: tl.constexpr, UINT: tl.constexpr, BITS: tl.constexpr, LO: tl.constexpr,
                      HI: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr, TILE: tl.constexpr):
    """Histogram of key bits [LO, HI) over the keys of one tile whose bits >= HI match the prefix."""
    pid = tl.program_id(0)
    segment, start, end = _tile(pid, tile_segment_ptr, tile_first_ptr, offsets_ptr, num_segments, TILE)
    RADIX: tl.constexpr = 1 << (HI - LO)
    prefix = tl.load(prefix_ptr + segment).to(UINT, bitcast=True)
    counts = tl.zeros((RADIX,), tl.int32)
    nans = tl.zeros((BLOCK,), tl.int32)
    for first in range(start, end, BLOCK):
        offs = first + tl.arange(0, BLOCK)
        inside = offs < end
        x = tl.load(scores_ptr + offs, mask=inside, other=0)
        key = _order_keys(x, SINT, UINT, BITS)
        wanted = inside
        if HI < BITS:
            wanted = wanted & ((key >> HI) == (prefix >> HI))
        else:  # first round: every key takes part; count NaNs on the way
            nans += (inside & (x != x)).to(tl.int32)
        counts += tl.histogram(((key >> LO) & (RADIX - 1)).to(tl.int32), RADIX, mask=wanted)
    tl.atomic_add(hist_ptr + segment * STRIDE + tl.arange(0, RADIX), counts.to(tl.int64), mask=counts > 0)
    if HI == BITS:
        nan_count = tl.sum(nans)
        tl.atomic_add(nan_ptr, nan_count, mask=nan_count > 0)


@triton.jit
def _pick_kernel(hist_ptr, prefix_ptr, remaining_ptr, equal_ptr,
                 SINT: tl.constexpr, UINT: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
                 STRIDE: tl.constexpr, LAST: tl.constexpr):
    """One segment: choose the digit holding the k-th largest key, update prefix and remaining."""
    segment = tl.program_id(0)
    RADIX: tl.constexpr = 1 << (HI - LO)
    bins = tl.arange(0, RADIX)
    counts = tl.load(hist_ptr + segment * STRIDE + bins)
    remaining = tl.load(remaining_ptr + segment)
    at_least = tl.cumsum(counts, 0, reverse=True)  # keys whose digit is >= bin
    # The largest digit with enough keys at or above it (bin 0 always qualifies; remaining == 0
    # picks the top bin, so an empty selection keeps nothing).
    digit = tl.max(tl.where(at_least >= remaining, bins, 0), 0)
    tl.store(remaining_ptr + segment, remaining - tl.sum(tl.where(bins > digit, counts, 0), 0))
    prefix = tl.load(prefix_ptr + segment).to(UINT, bitcast=True) | (digit.to(UINT) << LO)
    tl.store(prefix_ptr + segment, prefix.to(SINT, bitcast=True))
    tl.store(hist_ptr + segment * STRIDE + bins, tl.zeros_like(counts))  # ready for the next round
    if LAST:
        tl.store(equal_ptr + segment, tl.sum(tl.where(bins == digit, counts, 0), 0))


@triton.jit
def _tie_count_kernel(scores_ptr, tile_segment_ptr, tile_first_ptr, offsets_ptr, threshold_ptr, remaining_ptr,
                      equal_ptr, tile_equal_ptr, num_segments,
                      SINT: tl.constexpr, UINT: tl.constexpr, BITS: tl.constexpr,
                      BLOCK: tl.constexpr, TILE: tl.constexpr):
    """Keys equal to the threshold in one tile, counted only where the segment splits its ties."""
    pid = tl.program_id(0)
    segment, start, end = _tile(pid, tile_segment_ptr, tile_first_ptr, offsets_ptr, num_segments, TILE)
    split = tl.load(remaining_ptr + segment) < tl.load(equal_ptr + segment)
    end = tl.where(split, end, start)  # all ties kept: nothing to read
    threshold = tl.load(threshold_ptr + segment).to(UINT, bitcast=True)
    ties = tl.zeros((BLOCK,), tl.int32)
    for first in range(start, end, BLOCK):
        offs = first + tl.arange(0, BLOCK)
        inside = offs < end
        key = _order_keys(tl.load(scores_ptr + offs, mask=inside, other=0), SINT, UINT, BITS)
        ties += (inside & (key == threshold)).to(tl.int32)
    tl.store(tile_equal_ptr + pid, tl.sum(ties, 0).to(tl.int64))


@triton.jit
def _write_kernel(scores_ptr, tile_segment_ptr, tile_first_ptr, offsets_ptr, threshold_ptr, remaining_ptr,
                  ties_before_ptr, mask_ptr, num_segments,
                  SINT: tl.constexpr, UINT: tl.constexpr, BITS: tl.constexpr,
                  BLOCK: tl.constexpr, TILE: tl.constexpr):
    """Write one tile of the mask: keys above the threshold, and the first `remaining` equal keys."""
    pid = tl.program_id(0)
    segment, start, end = _tile(pid, tile_segment_ptr, tile_first_ptr, offsets_ptr, num_segments, TILE)
    threshold = tl.load(threshold_ptr + segment).to(UINT, bitcast=True)
    remaining = tl.load(remaining_ptr + segment)
    # Equal keys in the earlier tiles of this segment (zero where the segment keeps all its ties:
    # then the in-tile rank below stays under `remaining`, which equals the number of ties).
    rank = tl.load(ties_before_ptr + pid) - tl.load(ties_before_ptr + tl.load(tile_first_ptr + segment))
    for first in range(start, end, BLOCK):
        offs = first + tl.arange(0, BLOCK)
        inside = offs < end
        key = _order_keys(tl.load(scores_ptr + offs, mask=inside, other=0), SINT, UINT, BITS)
        tie = (inside & (key == threshold)).to(tl.int32)
        before = rank + tl.cumsum(tie, 0) - tie
        keep = (key > threshold) | ((tie != 0) & (before < remaining))
        tl.store(mask_ptr + offs, keep, mask=inside)
        rank += tl.sum(tie, 0)


def _digit_plan(bits: int, digit_bits: int) -> list[int]:
    """Widths of the radix digits, most significant first: as even as possible, none above digit_bits."""
    if not 8 <= digit_bits <= 12:  # 256 to 4096 bins: fewer bins mean more passes, more bins more memory
        raise ValueError(f"digit_bits: expected 8 to 12, got {digit_bits}")
    rounds = -(-bits // digit_bits)
    return [bits // rounds + (r < bits % rounds) for r in range(rounds)]


@on_device
def topk_mask(scores: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor, *, digit_bits: int = 8,
              block: int = width(1024, 4096), chunks: int = width(4, 1)):
    """Segmented exact top-k mask of the contiguous 1-D `scores` and the number of NaN scores found.

    offsets: (S+1,) int64 segment bounds; k: (S,) int64 counts, both on the device of `scores`.
    Returns (mask, nan_count): a bool mask like `scores` (meaningless if nan_count > 0) and a
    one-element int32 tensor, left on the device so that nothing synchronizes here.
    """
    device, total, num_segments = scores.device, scores.numel(), k.numel()
    mask = torch.empty(total, dtype=torch.bool, device=device)
    nan_count = torch.zeros(1, dtype=torch.int32, device=device)
    if total == 0:
        return mask, nan_count
    bits, sint, uint, state_dtype = _KEYS[scores.dtype]
    tile = block * chunks
    tile_first = torch.zeros(num_segments + 1, dtype=torch.int64, device=device)
    torch.cumsum((offsets.diff() + tile - 1) // tile, 0, out=tile_first[1:])
    tiles = triton.cdiv(total, tile) + num_segments  # bounds the real tile count without asking the device
    tile_segment = torch.searchsorted(tile_first, torch.arange(tiles, device=device), right=True) - 1

    prefix = torch.zeros(num_segments, dtype=state_dtype, device=device)
    remaining = k.clone()
    equal = torch.empty(num_segments, dtype=torch.int64, device=device)
    digits = _digit_plan(bits, digit_bits)
    stride = 1 << digits[0]
    hist = torch.zeros(num_segments * stride, dtype=torch.int64, device=device)
    keys = dict(SINT=sint, UINT=uint, BITS=bits)
    hi = bits
    for digit in digits:
        lo = hi - digit
        _histogram_kernel[(tiles,)](scores, tile_segment, tile_first, offsets, prefix, hist, nan_count, num_segments,
                                    **keys, LO=lo, HI=hi, STRIDE=stride, BLOCK=block, TILE=tile)
        _pick_kernel[(num_segments,)](hist, prefix, remaining, equal, SINT=sint, UINT=uint, LO=lo, HI=hi,
                                      STRIDE=stride, LAST=lo == 0)
        hi = lo

    tile_equal = torch.empty(tiles, dtype=torch.int64, device=device)
    _tie_count_kernel[(tiles,)](scores, tile_segment, tile_first, offsets, prefix, remaining, equal, tile_equal,
                                num_segments, **keys, BLOCK=block, TILE=tile)
    ties_before = torch.cumsum(tile_equal, 0).sub_(tile_equal)
    _write_kernel[(tiles,)](scores, tile_segment, tile_first, offsets, prefix, remaining, ties_before, mask,
                            num_segments, **keys, BLOCK=block, TILE=tile)
    return mask, nan_count
