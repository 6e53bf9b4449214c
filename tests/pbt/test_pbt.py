"""Schedules, global masks, the iterative driver, Panning's steps and revival."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import panning.ops
from panning import data, models, prune
from panning.arena import Arena
from panning.pbt import WEIGHTS_BY_SPARSITY, PanningIndices, PanningScorer, index_weights, prune_loop, step_mask
from panning.pbt.rl.env import PanningEnv
from panning.sparsity import keep_count, schedule


def pan(indices, sparsity, *, iterations, policy=None, on_step=None):
    """Hand-scheduled Panning through the pruning loop, as panning.prune runs it."""
    return prune_loop(PanningScorer(indices, policy), indices.arena.numel, sparsity, iterations, indices.arena.device,
                      keep_pruned=False, on_step=on_step)


@pytest.fixture(scope="module")
def bundle():
    return data.load("synthetic", num_classes=3, input_shape=(8,), n_train=60, n_test=30)


def small_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", (8,), 3, width=0.1)  # 8 -> 10 -> 10 -> 3: 210 weights


# -- the pruning loop ---------------------------------------------------------------------------------

# The schedules and the Panning table are internal: panning.prune checks sparsity and steps before them.
@pytest.mark.parametrize("method", ["synflow", "panning"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.9", True])
def test_bad_sparsity_is_refused_before_any_schedule(bundle, method, bad):
    with pytest.raises(ValueError, match="sparsity"):
        prune(small_mlp(), method, bad, bundle, iterations=3)


def test_bad_steps_are_refused_before_any_schedule(bundle):
    with pytest.raises(ValueError, match="iterations"):
        prune(small_mlp(), "synflow", 0.5, bundle, iterations=0)


def test_iterate_keep_pruned_gives_nested_masks_and_the_final_count():
    scores = torch.randn(5, 100, generator=torch.Generator().manual_seed(0))
    history = []
    for keep_pruned in (True, False):
        masks = []
        final = prune_loop(lambda step, mask, sparsity: scores[step], 100, 0.9, 5, torch.device("cpu"),
                           keep_pruned=keep_pruned, on_step=lambda step, mask: masks.append(mask))
        assert int(final.sum()) == 10 and [int(m.sum()) for m in masks] == [63, 40, 25, 16, 10]
        history.append(masks)
    nested, free = history
    assert all(bool((b <= a).all()) for a, b in zip(nested, nested[1:]))
    assert not all(bool((b <= a).all()) for a, b in zip(free, free[1:]))  # independent scores: revivals


# -- Panning ------------------------------------------------------------------------------------------

def test_index_weights_follow_the_table():
    assert index_weights(0.0) == index_weights(0.8) == (0.2, 0.5, 0.3)
    assert index_weights(0.85) == (0.2, 0.4, 0.4)
    assert index_weights(0.95) == (0.2, 0.3, 0.5)
    assert index_weights(0.985) == (0.4, 0.2, 0.4)
    assert index_weights(0.995) == index_weights(1.0) == (0.5, 0.0, 0.5)
    assert [w for _, w in WEIGHTS_BY_SPARSITY][-1] == (0.5, 0.0, 0.5)


def test_step_mask_is_the_topk_of_the_weighted_abs_zscores():
    g = torch.Generator().manual_seed(0)
    indices = torch.randn(3, 50, generator=g, dtype=torch.float64)
    weights = (0.2, 0.3, 0.5)
    z = ((indices - indices.mean(1, keepdim=True)) / indices.std(1, correction=0, keepdim=True)).abs()
    combined = (torch.tensor(weights, dtype=torch.float64)[:, None] * z).sum(0)
    expected = torch.zeros(50, dtype=torch.bool)
    expected[combined.topk(12).indices] = True
    assert torch.equal(step_mask(indices, weights, 12), expected)


def test_panning_calls_saliency_and_topk_once_per_step(bundle, monkeypatch):
    calls = {"saliency": 0, "topk_mask": 0}
    for name in calls:
        original = getattr(panning.ops, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(panning.ops, name, counted)
    model = small_mlp()
    arena = Arena(model, share=False)
    indices = PanningIndices(model, arena, bundle.train, (8,), per_class=4, generator=torch.Generator().manual_seed(0))
    mask = pan(indices, 0.9, iterations=6)
    assert calls == {"saliency": 6, "topk_mask": 6}
    assert int(mask.sum()) == keep_count(arena.numel, 0.9)


def test_panning_revives_pruned_weights(bundle):
    model = small_mlp()
    arena = Arena(model, share=False)
    indices = PanningIndices(model, arena, bundle.train, (8,), per_class=4, generator=torch.Generator().manual_seed(0))
    history: list[torch.Tensor] = []
    final = pan(indices, 0.9, iterations=8, on_step=lambda step, mask: history.append(mask.clone()))
    masks = torch.stack(history)
    assert masks.sum(1).tolist() == schedule(arena.numel, 0.9, 8).counts
    revived = (~masks[:-1] & masks[1:]).sum(1)  # pruned after step e, kept after step e + 1
    assert int(revived.sum()) > 0
    assert torch.equal(final, masks[-1])


def test_panning_uses_the_policy_and_the_step_sparsity(bundle):
    model = small_mlp()
    arena = Arena(model, share=False)
    seen = []

    def policy(step, sparsity):
        seen.append((step, sparsity))
        return (1.0, 0.0, 0.0)  # SynFlow only
    indices = PanningIndices(model, arena, bundle.train, (8,), per_class=4, generator=torch.Generator().manual_seed(0))
    pan(indices, 0.75, iterations=3, policy=policy)
    assert seen == [(e, 1 - 0.25 ** ((e + 1) / 3)) for e in range(3)]  # the scheduled sparsity, not 1 - k / N


def test_panning_indices_cache_batches_across_calls(bundle):
    model = small_mlp()
    arena = Arena(model, share=False)
    fresh = PanningIndices(model, arena, bundle.train, (8,), per_class=4, generator=torch.Generator().manual_seed(0))
    assert fresh.dense(0) is fresh.dense(0)  # one batch per step: every index of a step sees it
    assert not torch.equal(fresh.dense(0), fresh.dense(1))  # and a fresh batch at the next step
    cached = PanningIndices(model, arena, bundle.train, (8,), per_class=4, generator=torch.Generator().manual_seed(0),
                            batches=2)
    first = [cached.dense(step) for step in range(4)]
    assert first[0] is first[2] and first[1] is first[3] and not torch.equal(first[0], first[1])
    assert cached.batch(5) is cached.batch(1)
    ones = torch.ones(arena.numel, dtype=torch.bool)
    stack = cached(2, ones)
    assert stack.shape == (3, arena.numel) and torch.equal(stack[1:], first[0])
    mask = torch.rand(arena.numel, generator=torch.Generator().manual_seed(1)) < 0.4
    flow = cached.flow(mask)  # a flow computed once can serve the index and the effective mask alike
    assert torch.equal(cached(2, mask, flow), cached(2, mask))
    assert not (flow.flowing() & ~mask).any()


def test_panning_indices_check_arguments(bundle):
    model = small_mlp()
    arena = Arena(model, share=False)
    with pytest.raises(ValueError, match="per_class"):
        PanningIndices(model, arena, bundle.train, (8,), per_class=0)
    with pytest.raises(ValueError, match="per_class"):
        PanningIndices(model, arena, bundle.train, (8,), per_class=1000)
    # batches and the index variant are checked where a user gives them: the environments and panning.prune
    with pytest.raises(ValueError, match="batches"):
        PanningEnv(model, bundle.train, (8,), batches=0)
    with pytest.raises(ValueError, match="indices"):
        prune(model, "panning", 0.5, bundle, indices="absolute")
