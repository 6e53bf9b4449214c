"""panning.prune(method="panning") against an independent plain-torch computation of the authors' algorithm.

The reference below is written from the formulas of Kang et al.'s released `Panning()` (see docs/pbt.md),
sharing no code with panning.pbt or panning.criteria: modules, torch.autograd and torch.topk only. Both
see the same initial weights and the same class-balanced batches (drawn from one seeded generator in step
order), with the authors' kept counts int(N * kept) (rounding="floor").
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panning import data, models, prune
from panning.arena import Arena
from panning.data import class_balanced_batch
from panning.pbt import HandPolicy, PanningIndices, PanningScorer, prune_loop

STAIRS = (0.8, 0.9, 0.98, 0.99, 1.0)
STAGE_WEIGHTS = ((0.2, 0.5, 0.3), (0.2, 0.4, 0.4), (0.2, 0.3, 0.5), (0.4, 0.2, 0.4), (0.5, 0.0, 0.5))
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
STEPS, PER_CLASS = 12, 4


def normalized(parts: list[torch.Tensor]) -> torch.Tensor:
    flat = torch.cat([p.flatten() for p in parts])
    return (flat - flat.mean()).abs() / flat.std()


def reference_scores(dense: nn.Module, flow_net: nn.Module, init: list[torch.Tensor], masks: list[torch.Tensor],
                     batch, weights) -> torch.Tensor:
    """One step's combined score: signed w*g, w*Hg (dense, train, logits / 200) and w*dR/dw_eff (|w|*m, eval)."""
    x, y = batch
    params = [m.weight for m in dense.modules() if isinstance(m, PRUNABLE)]
    dense.train()
    loss = F.cross_entropy(dense(x) / 200, y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hg = torch.autograd.grad(sum((g ** 2).sum() for g in grads), params)
    flow_layers = [m for m in flow_net.modules() if isinstance(m, PRUNABLE)]
    with torch.no_grad():
        for layer, w, m in zip(flow_layers, init, masks):
            layer.weight.copy_((w * m).abs())
    flow_net.zero_grad()
    flow_net(torch.ones(1, *x.shape[1:])).sum().backward()
    synflow = [w * layer.weight.grad for w, layer in zip(init, flow_layers)]
    snip = [w * g.detach() for w, g in zip(init, grads)]
    grasp = [w * h for w, h in zip(init, hg)]
    a = weights
    return a[0] * normalized(synflow) + a[1] * normalized(snip) + a[2] * normalized(grasp)


def authors_panning(model: nn.Module, dataset, sparsity: float, seed: int, forced: list[torch.Tensor] | None = None):
    """The final mask (flat, bool) of the authors' algorithm, and per step (threshold, scores, mask).

    With `forced`, step e starts from forced[e - 1] instead of its own previous mask (teacher forcing)."""
    dense = copy.deepcopy(model)
    flow_net = copy.deepcopy(model)
    with torch.no_grad():
        for t in flow_net.state_dict().values():
            t.abs_()
    flow_net.eval()
    init = [m.weight.detach().clone() for m in model.modules() if isinstance(m, PRUNABLE)]
    sizes = [w.numel() for w in init]
    flat_mask = torch.ones(sum(sizes), dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    stage, history = 0, []
    for e in range(STEPS):
        keep = (1.0 - sparsity) ** ((e + 1) / STEPS)
        batch = class_balanced_batch(dataset, PER_CLASS, generator=generator)
        if stage < 4 and STAIRS[stage] < 1.0 - keep:
            stage += 1
        start = flat_mask if forced is None or e == 0 else forced[e - 1]
        masks = [m.view_as(w).float() for m, w in zip(start.split(sizes), init)]
        scores = reference_scores(dense, flow_net, init, masks, batch, STAGE_WEIGHTS[stage]).detach()
        threshold = torch.topk(scores, int(len(scores) * keep)).values[-1]
        flat_mask = scores >= threshold
        history.append((threshold, scores, flat_mask))
    return flat_mask, history


def net(kind: str, seed: int) -> tuple[nn.Module, object]:
    torch.manual_seed(seed)
    if kind == "cnn1d":  # conv1d + biases, no BatchNorm: 900 weights
        bundle = data.load("synthetic", num_classes=5, input_shape=(1, 40), n_train=100, n_test=10)
        return models.build("cnn1d", (1, 40), 5, width=0.4), bundle
    bundle = data.load("synthetic", num_classes=4, input_shape=(1, 8, 8), n_train=80, n_test=10)
    return models.build("cnn2d", (1, 8, 8), 4, width=0.125), bundle  # conv2d + BatchNorm + maxpool: 1076


@pytest.mark.parametrize("kind", ["cnn1d", "cnn2d"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_panning_masks_equal_the_authors_algorithm(kind, sparsity):
    differing, kept = 0, 0
    for seed in ((0, 1) if sparsity == 0.9 else (2,)):
        model, bundle = net(kind, seed)
        expected, history = authors_panning(model, bundle.train, sparsity, seed)
        masks = prune(model, "panning", sparsity, bundle, seed=seed, iterations=STEPS, per_class=PER_CLASS,
                      rounding="floor")
        ours = torch.cat([m.flatten() for m in masks.values()])
        n = ours.numel()
        assert int(ours.sum()) == int(n * (1.0 - sparsity))  # the authors' count: int(N * (1 - s))
        ties = int((history[-1][1] == history[-1][0]).sum()) - 1  # reference keeps every tie at its threshold
        differing += int((ours != expected).sum()) - ties
        kept += int(expected.sum())
        # the library's default counts round(N * kept): the ±1 of rounding at some steps moves a few weights only
        rounded = prune(model, "panning", sparsity, bundle, seed=seed, iterations=STEPS, per_class=PER_CLASS)
        rounded = torch.cat([m.flatten() for m in rounded.values()])
        assert int(rounded.sum()) == round(n * (1.0 - sparsity))
        assert int((rounded != expected).sum()) <= 4
    assert differing == 0, f"{differing} of {kept} kept weights differ from the authors' masks"


@pytest.mark.parametrize("kind", ["cnn1d", "cnn2d"])
def test_every_step_matches_the_authors_given_the_same_previous_mask(kind):
    """Teacher forcing: each reference step starts from our previous mask, so one near-tie cannot cascade.
    Where a step differs, the two weights must be within rounding of the reference threshold."""
    model, bundle = net(kind, 3)
    arena = Arena(model, share=False)
    indices = PanningIndices(model, arena, bundle.train, bundle.input_shape, per_class=PER_CLASS,
                             generator=torch.Generator().manual_seed(3))
    ours: list[torch.Tensor] = []
    prune_loop(PanningScorer(indices), arena.numel, 0.98, STEPS, arena.device, keep_pruned=False, rounding="floor",
               on_step=lambda step, mask: ours.append(mask.clone()))
    _, history = authors_panning(model, bundle.train, 0.98, 3, forced=ours)
    swaps = 0
    for mine, (threshold, scores, theirs) in zip(ours, history):
        off = mine != theirs
        swaps += int(off.sum())
        assert torch.allclose(scores[off], threshold.expand(int(off.sum())), rtol=1e-5, atol=0)
    assert swaps <= 2  # at most one near-tie swap in 12 steps of ~1100 weights


def test_the_stage_moves_at_most_one_step_and_bounds_are_inclusive():
    policy = HandPolicy()
    # exact bounds stay in their stage: the authors move on only when the bound is strictly exceeded
    assert [policy(e, s) for e, s in enumerate([0.5, 0.8, 0.8000001, 0.9, 0.95, 0.98, 0.985, 0.99, 0.995])] == [
        STAGE_WEIGHTS[0], STAGE_WEIGHTS[0], STAGE_WEIGHTS[1], STAGE_WEIGHTS[1], STAGE_WEIGHTS[2],
        STAGE_WEIGHTS[2], STAGE_WEIGHTS[3], STAGE_WEIGHTS[3], STAGE_WEIGHTS[4]]
    # a schedule that jumps over several bounds at once climbs one stage per step
    assert [policy(e, s) for e, s in enumerate([0.995, 0.996, 0.997, 0.998, 0.999])] == [
        STAGE_WEIGHTS[1], STAGE_WEIGHTS[2], STAGE_WEIGHTS[3], STAGE_WEIGHTS[4], STAGE_WEIGHTS[4]]
    # step 0 restarts the counter (one policy object, two runs)
    assert policy(0, 0.85) == STAGE_WEIGHTS[1]
    # 3 steps to 99.5%: scheduled 0.829, 0.971, 0.995 -> stages 1, 2, 3 (not 4: it lags one stage)
    scheduled = [1 - 0.005 ** ((e + 1) / 3) for e in range(3)]
    fresh = HandPolicy()
    assert [fresh(e, s) for e, s in enumerate(scheduled)] == [STAGE_WEIGHTS[1], STAGE_WEIGHTS[2], STAGE_WEIGHTS[3]]
