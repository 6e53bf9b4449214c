"""Effective sparsity and layer collapse: which kept weights still connect the input to the output, checked on
networks small enough to count the paths by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from panning import models
from panning.arena import Arena
from panning.connectivity import collapse_report, effective_masks, effective_sparsity
from panning.masks import Masks
from panning.nn import sparsify

from .test_arena import small_cnn  # conv, BatchNorm, max-pooling, two linear layers: every path rule


def test_effective_sparsity_finds_disconnected_weights():
    model = small_cnn()
    arena = Arena(model, share=False)
    dense = Masks.ones(arena)
    assert effective_sparsity(model, dense, (1, 8, 8)) == 0.0
    cut = dict(dense)
    cut["7.weight"] = dense["7.weight"].clone()
    cut["7.weight"][:, 0] = False  # hidden unit 0 now reaches no output
    effective = effective_masks(model, cut, (1, 8, 8))
    assert not effective["5.weight"][0].any() and effective["5.weight"][1:].all()
    assert effective["0.weight"].all()
    killed = dict(cut)
    killed["5.weight"] = torch.zeros_like(dense["5.weight"])
    assert set(collapse_report(model, killed, (1, 8, 8)).collapsed) == {"0.weight", "5.weight", "7.weight"}


def test_sparsified_models_have_the_same_paths():
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 7),  # noqa: E731
                                 nn.ReLU(), nn.Linear(7, 4))
    net = make()
    arena = Arena(net, share=False)
    masks = Masks.from_flat(arena, torch.rand(arena.numel, generator=torch.Generator().manual_seed(1)) < 0.15)
    assert effective_sparsity(net, masks, (2, 8)) >= masks.sparsity
    assert effective_masks(sparsify(make(), masks), masks, (2, 8)) == effective_masks(net, masks, (2, 8))


def test_report_detects_a_collapsed_layer():
    torch.manual_seed(0)
    model = models.build("mlp", (8,), 3, width=0.1)  # 8 -> 10 -> 10 -> 3: 210 weights
    arena = Arena(model, share=False)
    flat = torch.ones(arena.numel, dtype=torch.bool)
    bounds = arena.offsets.tolist()
    flat[bounds[1]:bounds[2]] = False  # the middle layer is gone: nothing connects
    result = collapse_report(model, Masks.from_flat(arena, flat), (8,))
    assert result.sparsity == pytest.approx(100 / 210)
    assert result.effective_sparsity == 1.0 and result.collapsed_any
    assert result.collapsed == arena.names
    assert result.density["3.weight"] == 0.0 and result.effective_density["1.weight"] == 0.0
    dense = collapse_report(model, Masks.ones(arena), (8,))
    assert dense.effective_sparsity == 0.0 and not dense.collapsed
