"""panning.sparsity: kept counts under both roundings, the exponential schedule, the global mask."""
from __future__ import annotations

import pytest
import torch

from panning.sparsity import ROUNDINGS, global_mask, keep_count, schedule


def test_exponential_schedule_follows_the_formula():
    kept = [0.01 ** 0.25, 0.01 ** 0.5, 0.01 ** 0.75, 0.01]
    plan = schedule(1000, 0.99, 4)
    assert plan.sparsities == pytest.approx([1 - k for k in kept]) and len(plan) == 4
    assert plan.counts == [316, 100, 32, 10] == [round(1000 * k) for k in kept]
    assert plan.counts[-1] == keep_count(1000, 0.99) == 10
    assert schedule(7, 0.5, 3).counts[-1] == keep_count(7, 0.5) == 4  # round half to even, one rule


def test_floor_counts_truncate_the_float_product_as_the_authors_code():
    assert 100 * (1 - 0.9) < 10  # 9.999999999999998
    assert keep_count(100, 0.9, "floor") == 9 and keep_count(100, 0.9) == 10
    assert keep_count(7, 0.5, "floor") == 3
    assert schedule(100, 0.9, 5, "floor").counts == [int(100 * (1 - 0.9) ** ((e + 1) / 5)) for e in range(5)]
    assert ROUNDINGS == ("nearest", "floor")


def test_global_mask_is_exact_and_respects_within():
    scores = torch.tensor([5.0, 1.0, 4.0, 4.0, 3.0, 0.0])
    assert global_mask(scores, 3).tolist() == [True, False, True, True, False, False]
    within = torch.tensor([True, True, False, True, True, True])
    assert global_mask(scores, 3, within=within).tolist() == [True, False, False, True, True, False]
