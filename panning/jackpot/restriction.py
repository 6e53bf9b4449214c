"""The mask refresh after a search step: the plain per-layer top-k, and the short restriction on top of it.

Plain refresh (`top_k_refresh`): every layer keeps its k[s] highest scores; a layer whose k-th and (k+1)-th
scores tie keeps its old mask, as the authors' code does.

The short restriction: admit only mask changes that the first-order loss model says do not hurt.

After an optimizer step the per-layer top-k of the new scores proposes, in every layer s, revivals A_s
(pruned now, above the layer's threshold) and removals B_s (kept now, below it); |A_s| = |B_s| because
both masks keep exactly k[s]. Within each layer they are paired best-first: the i-th highest-scoring
revival with the i-th lowest-scoring removal. The pair (i revived, j removed) changes the loss, to first
order in the effective weights, by

    delta = g_i * w_i - g_j * w_j          (g = dL/dW_eff of the step, so g * w is the score gradient)

and is admitted only if delta <= 0, and only the first ceil(r_t * |A_s|) admissible pairs of a layer (in
the best-first order), with r_t = (1 - t / T)^4 for step t of T. Admitted pairs swap; every layer still
keeps exactly k[s] weights. Ties (equal scores) go to the lower flat index.

Cost: O(N) to find the candidates, then O(C log C) over the C candidates; finding them reads their count
back to the host (one device synchronization per step; the unrestricted refresh has none).
"""
from __future__ import annotations

import torch

from .. import ops


def rate(step: int, total: int) -> float:
    """r_t = (1 - t / T)^4: the fraction of a layer's candidate pairs that step t may still admit."""
    return (1.0 - step / total) ** 4


def _layer_order(values: torch.Tensor, segment: torch.Tensor, descending: bool) -> torch.Tensor:
    """Permutation grouping candidates by layer, each layer sorted by value (stable: lower index first)."""
    order = torch.sort(values, descending=descending, stable=True).indices
    return order[torch.sort(segment[order], stable=True).indices]


def short_restriction(old: torch.Tensor, proposed: torch.Tensor, scores: torch.Tensor, score_grad: torch.Tensor,
                      offsets: torch.Tensor, r: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The restricted new mask and the (proposed, admitted) pair counts (0-dim int64 tensors on the device).

    old, proposed: flat bool masks with the same per-segment counts; scores: the new flat scores;
    score_grad: dL/dW_eff * w of the step (flat); offsets: (S+1) segment bounds (host); r in [0, 1].
    `old` is not modified.
    """
    revive = (proposed & ~old).nonzero().squeeze(1)  # ascending flat index: grouped by layer
    remove = (old & ~proposed).nonzero().squeeze(1)
    bounds = offsets.to(old.device)[1:]
    seg_a = torch.bucketize(revive, bounds, right=True)
    seg_b = torch.bucketize(remove, bounds, right=True)
    order_a = _layer_order(scores[revive], seg_a, descending=True)
    order_b = _layer_order(scores[remove], seg_b, descending=False)
    a, b, seg = revive[order_a], remove[order_b], seg_a[order_a]
    segments = offsets.numel() - 1
    pairs = torch.zeros(segments, dtype=torch.int64, device=old.device).index_add_(0, seg, torch.ones_like(seg))
    cap = torch.ceil(r * pairs.double()).to(torch.int64)
    ok = (score_grad[a] - score_grad[b]) <= 0
    ok_count = torch.zeros_like(pairs).index_add_(0, seg, ok.to(torch.int64))
    # Rank (1-based) of each admissible pair among the admissible pairs of its layer.
    before_layer = ok_count.cumsum(0) - ok_count
    rank = ok.to(torch.int64).cumsum(0) - before_layer[seg]
    admit = ok & (rank <= cap[seg])
    new = old.clone()
    new[a[admit]] = True
    new[b[admit]] = False
    return new, pairs.sum(), admit.sum()


def top_k_refresh(old: torch.Tensor, scores: torch.Tensor, k: torch.Tensor, offsets: torch.Tensor,
                  segment: torch.Tensor) -> torch.Tensor:
    """The plain refresh: every layer keeps its k[s] highest scores, except that a layer whose k-th and
    (k+1)-th highest scores tie keeps its old mask (the authors' code then finds unequal numbers of revivals
    and removals and leaves the layer alone). One segmented top-k, which also reports the tied layers; no
    host sync on a GPU.

    old: the current flat bool mask; k, offsets: host int64; segment: (N,) layer index of every weight.
    """
    proposed, tied = ops.topk_mask(scores, k, offsets=offsets, ties=True)
    if tied.device.type == "cpu" and not bool(tied.any()):  # the usual case, no copy of the old mask
        return proposed
    return torch.where(tied[segment], old, proposed)
