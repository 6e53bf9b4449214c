"""Lottery-jackpot search: frozen weights, exact budgets, straight-through gradients, restriction, resume."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from panning import data as datasets
from panning import ops
from panning.arena import Arena, except_last, prunable
from panning.jackpot import (JackpotNet, Searcher, initial_scores, layer_budgets, magnitude_mask, magnitude_masks,
                             rate, search, short_restriction)


def small_net() -> nn.Module:
    """Conv2d + BatchNorm, a hidden Linear and a Linear classifier."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4))


def small_net_1d() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 12),
                         nn.ReLU(), nn.Linear(12, 4))


def bundle_2d(n_train: int = 256):
    return datasets.load("synthetic", input_shape=(1, 8, 8), n_train=n_train, n_test=64, noise=1.5)


def segment_counts(flat: torch.Tensor, offsets: torch.Tensor) -> list[int]:
    return [int(flat[a:b].sum()) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


# -- budgets and starting scores --------------------------------------------------------------------


def test_global_budget_is_one_magnitude_threshold_and_uniform_is_per_layer():
    model = small_net()
    arena = Arena(model, include=except_last(model))
    k = layer_budgets(arena, 0.8)
    assert k.dtype == torch.int64 and k.device.type == "cpu"
    assert int(k.sum()) == round(0.2 * arena.numel)
    threshold_mask = ops.topk_mask(arena.weights.abs(), int(k.sum()))
    assert segment_counts(threshold_mask, arena.offsets) == k.tolist()
    # The per-layer magnitude mask under these budgets is the global magnitude mask.
    assert torch.equal(magnitude_mask(arena, k), threshold_mask)
    baseline = magnitude_masks(model, 0.8)
    assert list(baseline) == arena.names and torch.equal(baseline.to_flat(arena), threshold_mask)
    uniform = layer_budgets(arena, 0.8, budget="uniform")
    assert uniform.tolist() == [round(0.2 * n) for n in arena.sizes.tolist()]
    with pytest.raises(ValueError, match="sparsity"):
        layer_budgets(arena, 1.0)
    with pytest.raises(ValueError, match="budget"):
        layer_budgets(arena, 0.5, budget="per-channel")


@pytest.mark.parametrize("init", ["magnitude", "abs"])
def test_initial_scores_select_the_magnitude_mask(init):
    model = small_net()
    arena = Arena(model, include=prunable)
    k = layer_budgets(arena, 0.9)
    scores = initial_scores(arena, k, init)
    assert torch.equal(ops.topk_mask(scores, k, offsets=arena.offsets), magnitude_mask(arena, k))


def test_random_scores_follow_the_generator():
    arena = Arena(small_net())
    k = layer_budgets(arena, 0.5)
    one = initial_scores(arena, k, "random", generator=torch.Generator().manual_seed(3))
    two = initial_scores(arena, k, "random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(one, two) and not torch.equal(one, initial_scores(arena, k, "magnitude"))
    with pytest.raises(ValueError, match="init"):
        initial_scores(arena, k, "kaiming")


# -- the score layers -------------------------------------------------------------------------------


@pytest.mark.parametrize("make, shape", [(small_net, (1, 8, 8)), (small_net_1d, (1, 16))])
def test_straight_through_gradient_is_grad_of_effective_weight_times_weight(make, shape):
    model = make().double()
    x = torch.randn(5, *shape, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    net = JackpotNet(model, include=prunable)  # classifier searched too: Linear with and without bias
    k = layer_budgets(net.arena, 0.6)
    net.set_scores(torch.randn(net.arena.numel, dtype=torch.float64))
    net.set_mask(ops.topk_mask(net.scores.detach(), k, offsets=net.arena.offsets))
    masks = net.masks()
    net.eval()  # BatchNorm on running statistics: the same function in both computations
    F.cross_entropy(net(x), y).backward()
    got = net.arena.split(net.scores.grad)

    # Oracle: the plain network with W_eff = W * M as leaves; dL/dW_eff * W is the expected score gradient.
    plain = net.unwrap()
    effective = {n: (weights[n] * masks[n]).requires_grad_() for n in masks}
    params = {**{n: p.detach() for n, p in plain.named_parameters()}, **effective}
    buffers = dict(plain.named_buffers())
    loss = F.cross_entropy(torch.func.functional_call(plain, {**params, **buffers}, (x,)), y)
    loss.backward()
    assert set(got) == set(masks) and len(got) == 3
    for name in masks:
        expected = effective[name].grad * weights[name]
        assert torch.allclose(got[name], expected, rtol=1e-10, atol=1e-12), name
        assert bool((got[name][~masks[name]] != 0).any()), f"{name}: pruned weights must get gradients too"


def test_wrapping_freezes_everything_and_unwrap_restores_the_model():
    model = small_net()
    model[1].weight.requires_grad_(False)  # a user's own frozen parameter stays frozen after unwrap
    names = [n for n, _ in model.named_parameters()]
    net = JackpotNet(model)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["scores"]
    assert net.names == ["0.weight", "5.weight"]  # classifier dense by default
    with pytest.raises(ValueError, match="already wrapped"):
        JackpotNet(model)
    with pytest.raises(RuntimeError, match="cannot be moved"):
        net.double()
    plain = net.unwrap()
    assert plain is model and [n for n, _ in plain.named_parameters()] == names
    assert [n for n, p in plain.named_parameters() if not p.requires_grad] == ["1.weight"]


def test_wrapped_model_wears_the_mask_outside_the_search():
    model = small_net()
    x = torch.randn(4, 1, 8, 8)
    net = JackpotNet(model)
    k = layer_budgets(net.arena, 0.7)
    net.set_mask(magnitude_mask(net.arena, k))
    masks = net.masks()
    net.eval()
    with torch.no_grad():
        worn = model(x)  # the user's own module object, now wrapped
    plain = net.unwrap()
    masks.apply(plain)
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), worn, atol=1e-6)


# -- the search step --------------------------------------------------------------------------------


@pytest.mark.parametrize("restriction", ["short", "none"])
@pytest.mark.parametrize("budget", ["global", "uniform"])
def test_exact_per_layer_k_after_every_step(restriction, budget):
    data = bundle_2d()
    net = JackpotNet(small_net(), include=prunable)
    k = layer_budgets(net.arena, 0.85, budget=budget)
    net.set_scores(initial_scores(net.arena, k, "abs"))
    net.set_mask(magnitude_mask(net.arena, k))
    searcher = Searcher(net, k, total_steps=8, restriction=restriction, lr=0.5, monitor=True)
    x, y = data.train.tensors
    changed = False
    for step in range(8):
        before = net.mask.clone()
        searcher.step(x[32 * step:32 * step + 32], y[32 * step:32 * step + 32])
        assert segment_counts(net.mask, net.arena.offsets) == k.tolist()
        assert set(net.mask.unique().tolist()) <= {0.0, 1.0}
        changed |= not torch.equal(before, net.mask)
        if restriction == "none":
            assert torch.equal(net.mask != 0, ops.topk_mask(net.scores.detach(), k, offsets=net.arena.offsets))
    assert changed, "the search never changed the mask: the test does not exercise it"
    proposed, admitted, updates, rises = searcher.counters.tolist()
    assert admitted <= proposed and updates <= 8 and rises <= updates
    if restriction == "none":
        assert admitted == proposed
    with pytest.raises(RuntimeError, match="schedule"):
        searcher.step(x[:4], y[:4])


def test_short_restriction_pairs_best_first_tests_first_order_and_caps():
    # Two layers: [0, 6) and [6, 10). Old mask keeps 3 and 2.
    offsets = torch.tensor([0, 6, 10])
    old = torch.tensor([1, 1, 1, 0, 0, 0, 1, 1, 0, 0], dtype=torch.bool)
    proposed = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1, 1, 0], dtype=torch.bool)
    # Layer 0 proposes reviving 3, 4, 5 and removing 0, 1, 2; layer 1 reviving 8 and removing 6.
    scores = torch.tensor([0.1, 0.3, 0.2, 0.9, 0.7, 0.8, 0.0, 1.0, 0.5, 0.0])
    # Pairs best-first in layer 0: (3, 0), (5, 2), (4, 1); in layer 1: (8, 6).
    gw = torch.tensor([0.0, 0.0, -1.0, -0.5, 0.2, 0.1, 0.0, 0.0, 0.3, 0.0])
    # deltas: (3,0): -0.5 ok; (5,2): 0.1 - (-1.0) = 1.1 rejected; (4,1): 0.2 rejected; (8,6): 0.3 rejected
    new, pairs, admitted = short_restriction(old, proposed, scores, gw, offsets, 1.0)
    assert new.tolist() == [0, 1, 1, 1, 0, 0, 1, 1, 0, 0] and int(pairs) == 4 and int(admitted) == 1
    # All admissible, capped at ceil(r * 3) = 2 in layer 0 and ceil(r * 1) = 1 in layer 1.
    new, pairs, admitted = short_restriction(old, proposed, scores, torch.zeros(10), offsets, 0.5)
    assert new.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 1, 0] and int(admitted) == 3
    assert old.tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 0, 0]  # untouched
    assert rate(0, 10) == 1.0 and rate(5, 10) == pytest.approx(0.0625)
    with pytest.raises(ValueError, match="proposed"):
        short_restriction(old, torch.ones(10, dtype=torch.bool), scores, gw, offsets, 1.0)


# -- the search loop --------------------------------------------------------------------------------


def test_search_keeps_pretrained_weights_bitwise_and_updates_batchnorm_statistics():
    data = bundle_2d()
    model = small_net()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    running = model[1].running_mean.clone()
    result = search(model, data, sparsity=0.8, epochs=2, batch_size=64, monitor=True, progress=False)
    net = result.model
    assert result.masks.sparsity == pytest.approx(0.8, abs=1 / result.masks.numel)
    assert result.steps == 8 and result.completed and len(result.history) == 2
    assert result.counters()["admitted"] > 0, "the search never changed the mask"
    assert not torch.equal(model[1].running_mean, running)  # BatchNorm statistics do follow the masked net
    plain = net.unwrap()
    for name, p in plain.named_parameters():
        assert torch.equal(p, params[name]), name  # BatchNorm affine included
    assert math.isfinite(result.initial_test_acc)
    masked = result.masks.apply(copy.deepcopy(plain)).eval()  # the found network, its accuracy counted by hand
    x, y = data.test.tensors
    with torch.no_grad():
        assert result.history[-1].test_acc == pytest.approx(float((masked(x).argmax(1) == y).float().mean()))


def test_search_resumes_mid_epoch_with_the_same_final_masks(tmp_path):
    data = bundle_2d(n_train=200)  # 4 steps per epoch of 64, the last one short
    settings = dict(sparsity=0.9, epochs=3, batch_size=64, restriction="short", init="random", monitor=True,
                    progress=False, seed=5)
    whole = search(small_net(), data, **settings)
    path = tmp_path / "search.pt"
    first = search(small_net(), data, checkpoint=path, max_steps=6, **settings)
    assert first.steps == 6 and not first.completed and len(first.history) == 1
    second = search(small_net(), data, checkpoint=path, **settings)
    assert second.steps == whole.steps == 12 and second.completed
    for name in whole.masks:
        assert torch.equal(second.masks[name], whole.masks[name]), name
    assert torch.equal(second.model.scores, whole.model.scores)
    assert torch.equal(second.model.model[1].running_var.data, whole.model.model[1].running_var.data)
    strip = [dict(vars(r), seconds=0) for r in whole.history]
    assert [dict(vars(r), seconds=0) for r in second.history] == strip
    with pytest.raises(ValueError, match="another search"):
        search(small_net(), data, checkpoint=path, **{**settings, "sparsity": 0.8})


def test_search_validates_its_arguments_and_leaves_the_model_plain():
    data = bundle_2d()
    model = small_net()
    with pytest.raises(ValueError, match="restriction"):
        search(model, data, sparsity=0.9, restriction="long")
    with pytest.raises(ValueError, match="sparsity"):
        search(model, data, sparsity=1.5)
    with pytest.raises(TypeError, match="data"):
        search(model, [1, 2], sparsity=0.5)
    with pytest.raises(ValueError, match="epochs"):
        search(model, data, sparsity=0.5, epochs=0)
    assert isinstance(model[0], nn.Conv2d) and all(p.requires_grad for p in model.parameters())


def test_search_on_a_conv1d_model_from_a_tensor_dataset():
    data = datasets.load("synthetic", input_shape=(1, 16), n_train=128, n_test=32)
    result = search(small_net_1d(), data.train, sparsity=0.5, epochs=1, batch_size=32, restriction="none",
                    progress=False)
    assert math.isnan(result.history[0].test_acc) and list(result.masks) == ["0.weight", "3.weight"]
    assert result.masks.kept == round(0.5 * result.masks.numel)
