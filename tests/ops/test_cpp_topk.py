"""The C++ radix-select top-k against the reference at sizes where its parallel paths run."""
from __future__ import annotations

import pytest
import torch

from panning import ops

pytestmark = pytest.mark.skipif(not ops.backends()["cpp"]["available"], reason="panning._C is not built")


def both(scores, k, offsets=None):
    ours = ops.topk_mask(scores, k, offsets=offsets, backend="cpp")
    want = ops.topk_mask(scores, k, offsets=offsets, backend="reference")
    return ours, want


@pytest.mark.parametrize("decimals", [None, 1, 0])  # none, many and very many ties
def test_large_global_matches_reference(decimals):
    g = torch.Generator().manual_seed(11)
    scores = torch.randn(1_000_003, generator=g) * 100
    if decimals is not None:
        scores = scores.round(decimals=decimals)
    for k in (0, 1, 123_457, 999_999, 1_000_003):
        ours, want = both(scores, k)
        assert torch.equal(ours, want), k


def test_output_on_huge_pages_matches_reference():
    # A mask of >= 8 MB is allocated on huge pages (csrc/cpu/output.cpp); many ties, reused twice so that a
    # freed region is mapped again.
    scores = torch.randint(0, 1000, (9_000_001,), generator=torch.Generator().manual_seed(13)).float()
    for k in (4_500_000, 17):
        ours, want = both(scores, k)
        assert ours.dtype == torch.bool and ours.shape == scores.shape
        assert torch.equal(ours, want), k


def test_special_values_at_scale():
    g = torch.Generator().manual_seed(12)
    pool = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0])
    scores = pool[torch.randint(0, pool.numel(), (300_001,), generator=g)]
    for k in (5, 150_000, 299_999):
        ours, want = both(scores, k)
        assert torch.equal(ours, want), k


def test_many_segments_and_batched_rows():
    g = torch.Generator().manual_seed(13)
    sizes = torch.randint(0, 500, (2_000,), generator=g)
    sizes[::7] = 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
    scores = torch.randint(-50, 50, (int(offsets[-1]),), generator=g).float()
    k = (torch.rand(sizes.shape, generator=g) * (sizes + 1)).long().clamp(max=sizes)
    ours, want = both(scores, k, offsets)
    assert torch.equal(ours, want)
    rows = torch.randn(16, 40_000, generator=g).round(decimals=1)
    ours, want = both(rows, 4_000)
    assert torch.equal(ours, want)


def test_independent_of_thread_count():
    g = torch.Generator().manual_seed(14)
    scores = torch.randn(2_000_000, generator=g).round(decimals=2)
    before = torch.get_num_threads()
    try:
        masks = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            masks.append(ops.topk_mask(scores, 700_001, backend="cpp"))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(masks[0], masks[1])


def test_nan_raises_from_the_kernel_anywhere():
    scores = torch.randn(500_000)
    scores[345_678] = float("nan")
    with pytest.raises(ValueError, match="scores: contains NaN"):
        ops.topk_mask(scores, 10, backend="cpp")


def _ties_brute_force(scores, offsets, k):
    """tied[s]: the k-th and (k+1)-th largest of segment s are equal (written out with a sort)."""
    tied = []
    for s, kk in enumerate(k):
        values = torch.sort(scores[offsets[s]:offsets[s + 1]], descending=True).values
        tied.append(0 < kk < values.numel() and bool(values[kk - 1] == values[kk]))
    return torch.tensor(tied, dtype=torch.bool)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_ties_flag_per_segment(backend):
    g = torch.Generator().manual_seed(14)
    sizes = [0, 1, 2, 5, 4096, 5000, 70_000, 3, 300_000]
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    scores = torch.randint(0, 50, (offsets[-1],), generator=g).float()
    scores[offsets[-2]:] = torch.randn(sizes[-1], generator=g)  # a large segment without ties
    scores[offsets[4]:offsets[4] + 10] = -0.0  # -0.0 and +0.0 are one value
    scores[offsets[4] + 10:offsets[5]] = 0.0
    for k in ([0, 1, 1, 5, 2048, 1, 35_000, 2, 150_000], [0, 0, 2, 3, 4095, 4999, 1, 3, 1]):
        mask, tied = ops.topk_mask(scores, k, offsets=offsets, ties=True, backend=backend)
        assert torch.equal(mask, ops.topk_mask(scores, k, offsets=offsets, backend="reference"))
        assert torch.equal(tied, _ties_brute_force(scores, offsets, k)), (k, tied)


def test_ties_flag_for_rows_and_a_global_top_k():
    g = torch.Generator().manual_seed(15)
    scores = torch.randint(0, 4, (3, 1001), generator=g).float()
    mask, tied = ops.topk_mask(scores, 500, ties=True, backend="cpp")
    assert tied.shape == (3, 1) and bool(tied.all())  # 4 values over 1001 entries: the 500th and 501st tie
    assert torch.equal(mask, ops.topk_mask(scores, 500, backend="reference"))
    distinct = torch.randperm(1001, generator=g).float()
    mask, tied = ops.topk_mask(distinct, 17, ties=True, backend="cpp")
    assert tied.shape == (1,) and not bool(tied.any())
    empty_mask, empty_tied = ops.topk_mask(torch.empty(0), 0, ties=True, backend="cpp")
    assert empty_mask.shape == (0,) and empty_tied.shape == (1,) and not bool(empty_tied.any())
