"""Lottery-jackpot search: frozen weights, exact budgets, straight-through gradients, restriction, resume,
BatchNorm re-estimation, argument checks."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from panning import data as datasets, ops
from panning.arena import Arena, except_last, prunable
from panning.config import ConfigError
from panning.jackpot import (
    PRESETS,
    SearchConfig,
    Searcher,
    SearchSpace,
    finetune,
    initial_scores,
    magnitude_mask,
    magnitude_masks,
    rate,
    search,
    short_restriction,
    top_k_refresh,
)
from panning.nn import SparseLayer
from panning.sparsity import layer_budgets


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
        magnitude_masks(model, 1.0)
    with pytest.raises(ValueError, match="budget"):
        magnitude_masks(model, 0.5, budget="per-channel")


def test_floor_rounding_counts_budgets_as_the_authors_code():
    model = small_net()
    arena = Arena(model, include=except_last(model))
    magnitudes = arena.weights.abs()
    kept = int(arena.numel * (1 - 0.9))  # truncated, as int() does
    threshold = sorted(magnitudes.tolist(), reverse=True)[kept - 1]
    expected = []
    for a, b in zip(arena.offsets[:-1].tolist(), arena.offsets[1:].tolist()):
        n, below = b - a, sum(v < threshold for v in magnitudes[a:b].tolist())
        expected.append(n - int(n * (below / n)))
    assert layer_budgets(arena, 0.9, rounding="floor").tolist() == expected
    assert layer_budgets(arena, 0.9, budget="uniform", rounding="floor").tolist() == \
        [n - int(n * 0.9) for n in arena.sizes.tolist()]


@pytest.mark.parametrize("init", ["magnitude", "flat"])
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
    assert torch.equal(initial_scores(arena, k, "magnitude"), arena.weights.abs())  # margins scale with |w|
    flat = initial_scores(arena, k, "flat")
    keep = magnitude_mask(arena, k)
    assert bool((flat[keep] == 1).all()) and bool((flat[~keep] == 0.99).all())


# -- the search space: sparse layers with scores -----------------------------------------------------


@pytest.mark.parametrize("make, shape", [(small_net, (1, 8, 8)), (small_net_1d, (1, 16))])
def test_straight_through_gradient_is_grad_of_effective_weight_times_weight(make, shape):
    model = make().double()
    plain = copy.deepcopy(model)
    x = torch.randn(5, *shape, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    space = SearchSpace(model, prunable)  # classifier searched too: Linear with and without bias
    k = layer_budgets(space.arena, 0.6)
    space.set_scores(torch.randn(space.arena.numel, dtype=torch.float64))
    space.set_mask(ops.topk_mask(space.scores, k, offsets=space.arena.offsets))
    masks = space.masks()
    model.eval()  # BatchNorm on running statistics: the same function in both computations
    F.cross_entropy(model(x), y).backward()
    got = space.arena.split(space.score_grad())

    # Oracle: the plain network with W_eff = W * M as leaves; dL/dW_eff * W is the expected score gradient.
    weights = dict(plain.named_parameters())
    effective = {n: (weights[n].detach() * masks[n]).requires_grad_() for n in masks}
    params = {**{n: p.detach() for n, p in plain.named_parameters()}, **effective}
    plain.eval()
    loss = F.cross_entropy(torch.func.functional_call(plain, {**params, **dict(plain.named_buffers())}, (x,)), y)
    loss.backward()
    assert set(got) == set(masks) and len(got) == 3
    for name in masks:
        expected = effective[name].grad * weights[name].detach()
        assert torch.allclose(got[name], expected, rtol=1e-10, atol=1e-12), name
        assert bool((got[name][~masks[name]] != 0).any()), f"{name}: pruned weights must get gradients too"


def test_search_space_uses_the_sparse_layers_freezes_the_model_and_release_restores_flags():
    model = small_net()
    model[1].weight.requires_grad_(False)  # a user's own frozen parameter stays frozen after release
    space = SearchSpace(model, except_last(model))
    assert isinstance(model[0], SparseLayer) and isinstance(model[5], SparseLayer)
    assert type(model[7]) is nn.Linear  # classifier dense by default
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["0.scores", "5.scores"]
    assert space.names == ["0.weight", "5.weight"]
    # One flat buffer each: a write to the flat mask or scores is what every layer sees.
    space.set_mask(torch.zeros(space.arena.numel, dtype=torch.bool))
    assert not model[0].mask.any() and not model[5].mask.any()
    with pytest.raises(ValueError, match="already holds sparse layers"):
        SearchSpace(model, prunable)
    space.release()
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["1.weight"]


def test_search_space_wears_the_mask_and_keeps_the_weights():
    model = small_net()
    plain = copy.deepcopy(model)
    x = torch.randn(4, 1, 8, 8)
    space = SearchSpace(model, except_last(model))
    k = layer_budgets(space.arena, 0.7)
    space.set_mask(magnitude_mask(space.arena, k))
    masks = space.masks()
    model.eval()
    with torch.no_grad():
        worn = model(x)  # the user's own module object, its layers now sparse
    for name, p in plain.named_parameters():
        assert torch.equal(dict(model.named_parameters())[name], p), name  # nothing baked in
    masks.apply(plain)
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), worn, atol=1e-6)


def test_top_k_refresh_keeps_a_layer_whose_boundary_is_tied():
    offsets = torch.tensor([0, 4, 8])
    segment = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    old = torch.tensor([1, 1, 0, 0, 1, 0, 1, 0], dtype=torch.bool)
    k = torch.tensor([2, 2])
    # Layer 0: clear top-2 {2, 3}; layer 1: its 2nd and 3rd highest scores tie (0.5), so it stays as it was.
    scores = torch.tensor([0.1, 0.2, 0.9, 0.8, 0.9, 0.5, 0.1, 0.5])
    new = top_k_refresh(old, scores, k, offsets, segment)
    assert new.tolist() == [False, False, True, True, True, False, True, False]


# -- the search step --------------------------------------------------------------------------------


@pytest.mark.parametrize("restriction", ["short", "none"])
@pytest.mark.parametrize("budget", ["global", "uniform"])
def test_exact_per_layer_k_after_every_step(restriction, budget):
    data = bundle_2d()
    net = SearchSpace(small_net(), prunable)
    k = layer_budgets(net.arena, 0.85, budget=budget)
    net.set_scores(initial_scores(net.arena, k, "magnitude"))
    net.set_mask(magnitude_mask(net.arena, k))
    searcher = Searcher(net, k, total_steps=8, restriction=restriction, lr=0.5, monitor=True)
    x, y = data.train.tensors
    changed = False
    for step in range(8):
        before = net.mask.clone()
        searcher.step(x[32 * step:32 * step + 32], y[32 * step:32 * step + 32])
        assert segment_counts(net.mask, net.arena.offsets) == k.tolist()
        changed |= not torch.equal(before, net.mask)
        if restriction == "none":  # random-ish scores: no ties at the boundary, so the plain top-k
            assert torch.equal(net.mask, ops.topk_mask(net.scores, k, offsets=net.arena.offsets))
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


# -- the search loop --------------------------------------------------------------------------------


def test_search_keeps_pretrained_weights_bitwise_and_updates_batchnorm_statistics():
    data = bundle_2d()
    model = small_net()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    running = model[1].running_mean.clone()
    result = search(model, data, sparsity=0.8, epochs=2, batch_size=64, monitor=True, progress=False)
    assert result.model is model and isinstance(model[0], SparseLayer)
    assert result.masks.sparsity == pytest.approx(0.8, abs=1 / result.masks.numel)
    assert result.steps == 8 and result.completed and len(result.history) == 2
    assert result.counters()["admitted"] > 0, "the search never changed the mask"
    assert not torch.equal(model[1].running_mean, running)  # BatchNorm statistics do follow the masked net
    for name, p in model.named_parameters():
        if name in params:
            assert torch.equal(p, params[name]), name  # BatchNorm affine included
            assert p.requires_grad  # the flags the model came with
    assert math.isfinite(result.initial_test_acc)
    masked = result.masks.apply(copy.deepcopy(model)).eval()  # the found network, its accuracy counted by hand
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
    for name in whole.scores:
        assert torch.equal(second.scores[name], whole.scores[name]), name
    assert torch.equal(second.model[1].running_var, whole.model[1].running_var)
    strip = [dict(vars(r), seconds=0) for r in whole.history]
    assert [dict(vars(r), seconds=0) for r in second.history] == strip
    model = small_net()
    with pytest.raises(ValueError, match="another run"):
        search(model, data, checkpoint=path, **{**settings, "sparsity": 0.8})
    other = small_net()
    with torch.no_grad():
        for searched in (other[0], other[5]):  # other pre-trained weights, every one doubled: the same budgets
            searched.weight.mul_(2.0)
    with pytest.raises(ValueError, match=r"^checkpoint: '.*search.pt' belongs to another run \(pretrained_weights "):
        search(other, data, checkpoint=path, **settings)
    assert type(model[0]) is nn.Conv2d and all(p.requires_grad for p in model.parameters())  # given back plain


def test_search_validates_its_arguments_and_leaves_the_model_plain():
    data = bundle_2d()
    model = small_net()
    cases = [  # (error, match, data, keyword arguments)
        (ValueError, "restriction", data, dict(sparsity=0.9, restriction="long")),
        (ValueError, "sparsity", data, dict(sparsity=1.5)),
        (TypeError, "data", [1, 2], dict(sparsity=0.5)),
        (ValueError, "epochs", data, dict(sparsity=0.5, epochs=0)),
        (ValueError, "preset", data, dict(sparsity=0.5, preset="paper")),
        (ValueError, "lr", data, dict(sparsity=0.5, lr=-1.0)),
        (ValueError, "momentum", data, dict(sparsity=0.5, momentum=1.0)),
        (ValueError, "steps", data, dict(sparsity=0.5, steps=0)),
        (ValueError, "bn_reestimation", data, dict(sparsity=0.5, bn_reestimation="yes")),
        (ValueError, "max_steps", data, dict(sparsity=0.5, max_steps=-1)),
        (TypeError, "test", data.train, dict(sparsity=0.5, test=[1])),
        (TypeError, "checkpoint", data, dict(sparsity=0.5, checkpoint=3)),
    ]
    for error, match, given, kwargs in cases:
        with pytest.raises(error, match=match):
            search(model, given, **kwargs)
    assert type(model[0]) is nn.Conv2d and all(p.requires_grad for p in model.parameters())


def test_batchnorm_statistics_are_reestimated_for_the_start_mask_before_the_first_step():
    data = bundle_2d(n_train=200)  # batches of 64, 64, 64, 8
    model = small_net()
    plain = copy.deepcopy(model)
    result = search(model, data, sparsity=0.8, batch_size=64, max_steps=0, progress=False)
    assert result.steps == 0
    # Oracle: the start mask's convolution output, batch by batch in data order; the pass averages the batch
    # means and the unbiased batch variances over the batches.
    mask = result.masks["0.weight"]
    x = data.train.tensors[0]
    means, variances = [], []
    with torch.no_grad():
        for start in range(0, len(x), 64):
            h = F.conv2d(x[start:start + 64], plain[0].weight * mask, plain[0].bias, padding=1)
            means.append(h.mean(dim=(0, 2, 3)))
            variances.append(h.var(dim=(0, 2, 3), unbiased=True))
    assert torch.allclose(model[1].running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(model[1].running_var, torch.stack(variances).mean(0), atol=1e-5)
    assert model[1].momentum == plain[1].momentum
    # The authors' preset makes no such pass: the statistics stay the pre-trained ones.
    untouched = copy.deepcopy(plain)
    search(untouched, data, sparsity=0.8, batch_size=64, max_steps=0, preset="authors", progress=False)
    assert torch.equal(untouched[1].running_mean, plain[1].running_mean)


def test_search_on_a_conv1d_model_from_a_tensor_dataset():
    data = datasets.load("synthetic", input_shape=(1, 16), n_train=128, n_test=32)
    result = search(small_net_1d(), data.train, sparsity=0.5, epochs=1, batch_size=32, restriction="none",
                    progress=False)
    assert math.isnan(result.history[0].test_acc) and list(result.masks) == ["0.weight", "3.weight"]
    assert result.masks.kept == round(0.5 * result.masks.numel)


def test_the_search_module_is_importable_as_a_module():
    import importlib

    import panning.jackpot

    module = importlib.import_module("panning.jackpot.searching")
    assert module.search is panning.jackpot.search and callable(panning.jackpot.search)


def test_finetune_trains_the_kept_weights_under_the_searched_mask():
    data = bundle_2d()
    model = small_net()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = search(model, data, sparsity=0.8, steps=3, batch_size=64, progress=False)
    tuned, outcome = finetune(result, data, epochs=1, batch_size=64, progress=False)
    assert tuned is model and outcome.epochs == 1
    assert all(layer.scores is None for layer in model.modules() if isinstance(layer, SparseLayer))
    for name, mask in result.masks.items():
        weight = dict(model.named_parameters())[name]
        assert bool((weight[~mask] == 0).all()), name  # pruned weights zeroed and held there
        assert not torch.equal(weight[mask], before[name][mask]), name  # kept weights trained


def test_a_search_config_is_checked_once_when_built_and_keywords_override_it():
    with pytest.raises(ConfigError) as refused:
        SearchConfig(sparsity=0.5, epochs=2, steps=3)
    assert refused.value.field == "steps" and refused.value.reason.startswith("give the budget as epochs or as steps")
    with pytest.raises(ConfigError, match=r"^momentum: expected a number in \[0, 1\), got 1.0$"):
        SearchConfig(sparsity=0.5, momentum=1.0)
    config = SearchConfig(sparsity=0.5, preset="authors", lr=0.05)
    assert config.settings == {**PRESETS["authors"], "lr": 0.05}
    data = bundle_2d()
    given = search(small_net(), data, config, max_steps=2, progress=False)
    keywords = search(small_net(), data, sparsity=0.5, preset="authors", lr=0.05, max_steps=2, progress=False)
    overridden = search(small_net(), data, SearchConfig(sparsity=0.7, preset="authors"), sparsity=0.5, lr=0.05,
                        max_steps=2, progress=False)
    assert given.masks == keywords.masks == overridden.masks and given.steps == 2
