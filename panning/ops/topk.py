"""Exact top-k masks: global, per row of a batch, and per segment of an arena."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import checks as tensor_checks, dispatch


@torch.library.custom_op("panning::topk_mask", mutates_args=())
def _topk_mask(scores: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor, backend: str) -> torch.Tensor:
    return dispatch.kernel("topk_mask", backend)(scores, offsets, k)


@_topk_mask.register_fake
def _(scores, offsets, k, backend):
    return torch.empty_like(scores, dtype=torch.bool)


def _segment_k(k, offsets: torch.Tensor, rows: int) -> torch.Tensor:
    """Per-segment k as an int64 tensor of shape (rows, S) on the host: integer counts, one per segment (or per
    row and segment), each in [0, segment size]."""
    segments, sizes = offsets.numel() - 1, offsets.diff()
    k = torch.as_tensor(k).cpu()
    failed = ("integer counts" if k.dtype.is_floating_point or k.dtype == torch.bool
              else f"shape ({segments},) or ({rows}, {segments})" if k.shape not in ((segments,), (rows, segments))
              else "counts in [0, segment size]" if bool(((k < 0) | (k > sizes)).any()) else None)
    if failed is not None:
        raise ValueError(f"k: expected {failed}; segment sizes {sizes.tolist()[:8]}, "
                         f"got {k.tolist() if k.numel() < 9 else k}")
    return k.to(torch.int64).expand(rows, segments)


def _offsets(offsets, n: int) -> torch.Tensor:
    """The segment bounds as int64 on the host: 1-D integers, non-decreasing from 0 to n."""
    offsets = torch.as_tensor(offsets).cpu()
    if (offsets.dim() != 1 or offsets.dtype not in (torch.int32, torch.int64) or offsets.numel() < 1
            or offsets[0] != 0 or offsets[-1] != n or bool((offsets.diff() < 0).any())):
        raise ValueError(f"offsets: expected 1-D integer bounds, non-decreasing from 0 to {n}, got "
                         f"{offsets.tolist() if offsets.numel() < 9 else offsets}")
    return offsets.to(torch.int64)


def _ties(scores: torch.Tensor, mask: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Per segment of the flat scores: whether a dropped score is >= a kept one, i.e. the k-th and (k+1)-th
    largest are equal. In plain torch, for the backends whose kernel does not report it."""
    segments = offsets.numel() - 1
    segment = torch.repeat_interleave(torch.arange(segments, device=scores.device), offsets.diff())
    inf = torch.tensor(float("inf"), dtype=scores.dtype, device=scores.device)
    lowest_kept = torch.full((segments,), float("inf"), dtype=scores.dtype, device=scores.device).scatter_reduce(
        0, segment, torch.where(mask, scores, inf), "amin")
    highest_dropped = torch.full((segments,), -float("inf"), dtype=scores.dtype, device=scores.device).scatter_reduce(
        0, segment, torch.where(mask, -inf, scores), "amax")
    return highest_dropped >= lowest_kept


def topk_mask(scores: torch.Tensor, k: int | torch.Tensor | Sequence[int], *, offsets=None,
              backend: str | None = None, ties: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Keep the k largest scores: exactly k True, ties broken towards the lower index.

    - scores (N,), int k: global top-k.
    - scores (B, N), int k: top-k of every row.
    - with `offsets` (S+1 int64 segment bounds over the last dimension): top-k of every segment,
      k a sequence/tensor of S counts (or (B, S) for a batch). This is the per-layer mask of an arena.

    Returns a bool tensor shaped like `scores`. -0.0 and +0.0 are equal; NaN is an error.
    With `ties=True`, returns (mask, tied): tied[s] (shape (S,), or (B, S) for a batch) says whether the
    k-th and (k+1)-th largest scores of segment s are equal, so that another set of k indices would hold the
    same scores (the C++ kernel reports it at no cost; other backends compute it in plain torch).
    Offsets and k are small metadata: pass them on the host to avoid device synchronization.
    """
    tensor_checks.operands(scores=scores, dims={"scores": (1, 2)})
    rows, n = (1, scores.shape[0]) if scores.dim() == 1 else scores.shape
    if offsets is None and type(k) is int and 0 <= k <= n:  # the common call, without tensor work for k
        seg_offsets, seg_k = torch.tensor([0, n]), torch.full((rows, 1), k, dtype=torch.int64)
    else:  # any other k without offsets is one segment's count, checked (and refused if bad) like theirs
        seg_offsets = torch.tensor([0, n]) if offsets is None else _offsets(offsets, n)
        seg_k = _segment_k([k] if offsets is None else k, seg_offsets, rows)
    name = dispatch.resolve("topk_mask", scores.device, backend)
    tied_shape = seg_k.shape if scores.dim() == 2 else seg_k.shape[1:]
    if scores.numel() == 0:
        mask = torch.zeros_like(scores, dtype=torch.bool)
        return (mask, torch.zeros(tied_shape, dtype=torch.bool, device=scores.device)) if ties else mask
    if not dispatch.checks_inputs(name, "topk_mask"):
        tensor_checks.finite("scores", scores, infinite=True)
    # Flatten the batch into one list of segments over the contiguous scores.
    starts = (torch.arange(rows).unsqueeze(1) * n + seg_offsets[:-1]).reshape(-1)
    flat_offsets = torch.cat([starts, torch.tensor([rows * n])]).to(scores.device)
    flat_k = seg_k.reshape(-1).to(scores.device)
    flat = scores.detach().contiguous().reshape(-1)
    if not ties:
        return _topk_mask(flat, flat_offsets, flat_k, name).view(scores.shape)
    if dispatch.implements(name, "topk_mask_ties") and not torch.compiler.is_compiling():
        mask, tied = dispatch.kernel("topk_mask_ties", name)(flat, flat_offsets, flat_k)
    else:
        mask = _topk_mask(flat, flat_offsets, flat_k, name)
        tied = _ties(flat, mask, flat_offsets)
    return mask.view(scores.shape), tied.view(tied_shape)
