"""Arena: the prunable weights of a model as views into flat buffers (masks: test_masks.py; effective
sparsity: test_connectivity.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from panning.arena import Arena, except_last


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


def test_arena_rejects_models_without_prunable_weights_or_of_mixed_dtypes():
    with pytest.raises(ValueError, match=r"^model: expected prunable weights .*; got none$"):
        Arena(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match=r"^model: expected .* of one dtype; got 2 on .* of \{torch.float"):
        Arena(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double()))  # torch.cat would promote silently
