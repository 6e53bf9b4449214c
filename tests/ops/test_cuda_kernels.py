"""The compiled CUDA backend (panning._C_cuda) against the reference, on a GPU.

These run only where panning._C_cuda was built and a CUDA GPU is visible; elsewhere they skip and say
why (the CUDA sources are still compile-checked by test_cuda_compile.py and their kernels executed
on the CPU by test_cuda_emulated.py).
"""
from __future__ import annotations

import pytest
import torch

from panning import ops
from panning.ops import dispatch

_INFO = ops.backends()["cuda"]
pytestmark = pytest.mark.skipif(not _INFO["available"], reason=f"CUDA backend unavailable: {_INFO['reason']}")
DEVICE = torch.device("cuda")


def check(scores: torch.Tensor, k, offsets=None):
    got = ops.topk_mask(scores, k, offsets=offsets, backend="cuda")
    want = ops.topk_mask(scores, k, offsets=offsets, backend="reference")
    assert torch.equal(got, want)


def test_cuda_is_the_default_top_k_on_a_gpu():
    assert dispatch.resolve("topk_mask", DEVICE) == "cuda"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,k", [(1, 0), (1, 1), (1000, 0), (1000, 1000), (1000, 377), (100_003, 90_001)])
def test_global_with_ties(dtype, n, k):
    g = torch.Generator().manual_seed(n + k)
    check(torch.randn(n, generator=g).round(decimals=1).to(DEVICE, dtype), k)


def test_ties_split_across_tiles_and_all_equal():
    g = torch.Generator().manual_seed(0)
    check(torch.randint(0, 4, (200_001,), generator=g).float().to(DEVICE), 123_457)
    check(torch.full((70_000,), 1.5, device=DEVICE), 33_333)


def test_special_values():
    scores = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38,
                           float("inf"), 0.0], device=DEVICE)
    for k in range(scores.numel() + 1):
        check(scores, k)


@pytest.mark.parametrize("segments", [5, 300])  # up to 64 segments use 11-bit digits, more use 8-bit digits
def test_batched_rows_and_segments(segments):
    g = torch.Generator().manual_seed(segments)
    sizes = torch.randint(0, 500, (segments,), generator=g)
    sizes[[0, segments // 2, segments - 1]] = 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
    scores = torch.randint(-20, 20, (3, int(offsets[-1])), generator=g).float().to(DEVICE)
    k = (torch.rand(3, segments, generator=g) * (sizes + 1)).long()
    check(scores, k, offsets)
    check(scores, 41)


def test_nan_raises():
    scores = torch.randn(50_000, device=DEVICE)
    scores[49_999] = float("nan")
    with pytest.raises(ValueError, match="scores: contains NaN"):
        ops.topk_mask(scores, 10, backend="cuda")
