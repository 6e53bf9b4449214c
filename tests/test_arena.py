"""Arena layout, Masks basics and effective sparsity."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from panning.arena import Arena, except_last
from panning.connectivity import collapse_report, effective_masks, effective_sparsity
from panning.masks import Masks


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 3))


def test_arena_views_share_storage_with_the_model():
    model = small_cnn()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    arena = Arena(model)
    assert arena.names == ["0.weight", "5.weight", "7.weight"]
    assert arena.offsets.tolist() == [0, 36, 216, 231] and arena.numel == 231
    for name, param in arena:
        assert torch.equal(param, before[name])
    arena.weights.mul_(2)
    assert torch.equal(model[5].weight, 2 * before["5.weight"])
    model[0].weight.data.zero_()
    assert not arena.weights[:36].any()


def test_arena_flatten_split_round_trip():
    model = small_cnn()
    arena = Arena(model, include=except_last(model))
    assert arena.names == ["0.weight", "5.weight"]
    flat = torch.arange(arena.numel, dtype=torch.float32)
    assert torch.equal(arena.flatten(arena.split(flat)), flat)
    with pytest.raises(ValueError, match="flat"):
        arena.split(torch.zeros(3))
    with pytest.raises(ValueError, match="tensors"):
        arena.flatten({"0.weight": torch.zeros(4, 1, 3, 3)})


def test_arena_rejects_models_without_prunable_weights():
    with pytest.raises(ValueError, match="model"):
        Arena(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="model"):
        Arena("not a model")


def test_masks_measures_apply_save_load(tmp_path):
    model = small_cnn()
    arena = Arena(model, share=False)
    flat = torch.rand(arena.numel, generator=torch.Generator().manual_seed(1)) > 0.7
    masks = Masks.from_flat(arena, flat)
    assert masks.kept == int(flat.sum()) and masks.numel == arena.numel
    assert masks.sparsity == pytest.approx(1 - flat.float().mean().item())
    assert torch.equal(masks.to_flat(arena), flat)
    masks.apply(model)
    for name, param in model.named_parameters():
        if name in masks:
            assert not param[~masks[name]].any()
    masks.save(tmp_path / "m.safetensors")
    loaded = Masks.load(tmp_path / "m.safetensors")
    assert all(torch.equal(loaded[n], masks[n]) for n in masks) and loaded.overlap(masks) == 1.0
    other = Masks({n: ~m for n, m in masks.items()})
    assert masks.overlap(other) == 0.0
    with pytest.raises(ValueError, match="masks"):
        Masks({"nope.weight": torch.ones(2, dtype=torch.bool)}).apply(model)
    with pytest.raises(TypeError, match="masks"):
        Masks({"0.weight": torch.ones(4, 1, 3, 3)})


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
