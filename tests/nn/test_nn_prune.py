"""global_prune against torch.nn.utils.prune.global_unstructured on weights without ties."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from panning.arena import except_last
from panning.masks import Masks
from panning.nn import global_prune, sparsify


def model() -> nn.Module:
    torch.manual_seed(0)  # continuous random weights: no ties
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 10), nn.ReLU(),
                         nn.Linear(10, 4))


def torch_prune(net: nn.Module, amount, importance=None) -> Masks:
    """Prune with torch and return its masks by parameter name."""
    layers = {name: m for name, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    importance = {(layers[name[:-len(".weight")]], "weight"): s for name, s in (importance or {}).items()} or None
    prune.global_unstructured([(m, "weight") for m in layers.values()], pruning_method=prune.L1Unstructured,
                              amount=amount, importance_scores=importance)
    return Masks({f"{name}.weight": m.weight_mask.bool() for name, m in layers.items()})


@pytest.mark.parametrize("amount", [0.0, 0.37, 0.9, 0.999, 250])
def test_l1_matches_torch(amount):
    ours = global_prune(model(), amount)
    assert ours == torch_prune(model(), amount)
    total = ours.numel
    assert total - ours.kept == (amount if isinstance(amount, int) else round(amount * total))


def test_an_amount_that_keeps_no_weight_is_refused_as_sparsity_1_is():
    """torch.nn.utils.prune takes 1.0 (prune everything); panning refuses any amount that keeps nothing."""
    total = global_prune(model(), 0.0).numel
    for amount in (1.0, total, 1 - 0.4 / total):
        with pytest.raises(ValueError, match=rf"^amount: .* prunes all {total:,} remaining weights, keeping none"):
            global_prune(model(), amount)
    assert global_prune(model(), total - 1).kept == 1


def test_custom_scores_match_torch_importance_scores():
    net = model()
    g = torch.Generator().manual_seed(3)
    # positive: torch's L1Unstructured ranks |importance_scores|, global_prune ranks the scores themselves
    scores = {name: torch.rand(p.shape, generator=g) for name, p in net.named_parameters()
              if name.endswith("weight")}
    expected = torch_prune(model(), 0.6, importance=scores)
    assert global_prune(net, 0.6, score=scores) == expected
    assert global_prune(net, 0.6, score=lambda name, weight: scores[name]) == expected
    assert global_prune(net, 0.6, score=lambda name, weight: -weight.abs()) != global_prune(net, 0.6)


def test_iterative_pruning_counts_the_remaining_weights_like_torch():
    ours = sparsify(model(), global_prune(model(), 0.5))
    second = global_prune(ours, 0.5)
    theirs = model()
    torch_prune(theirs, 0.5)
    assert second == torch_prune(theirs, 0.5)
    assert second.sparsity == pytest.approx(0.75, abs=1 / second.numel)


def test_include_filter_keeps_the_classifier_out():
    net = model()
    masks = global_prune(net, 0.5, include=except_last(net))
    assert set(masks) == {"0.weight", "3.weight"}


def test_bad_arguments():
    net = model()
    before = copy.deepcopy(net.state_dict())
    total = sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight"))
    for amount in (1.5, -0.1, total + 1, -1, True, "0.5"):  # a bool is no count
        with pytest.raises(ValueError, match=r"^amount: expected a fraction \(a float in \[0, 1\]\) or a count"):
            global_prune(net, amount)
    with pytest.raises(ValueError, match="score"):
        global_prune(net, 0.5, score="l2")
    with pytest.raises(ValueError, match=r"^score: no tensor of the parameter's shape for \{'3.weight': 'missing', "
                                         r"'5.weight': 'missing'\}$"):
        global_prune(net, 0.5, score={"0.weight": torch.ones(3, 1, 3, 3)})
    with pytest.raises(ValueError, match=r"^score: .*'0.weight': 'shape \(3,\), expected \(3, 1, 3, 3\)'"):
        global_prune(net, 0.5, score=lambda name, weight: weight.flatten()[:3])
    with pytest.raises(ValueError, match="NaN"):
        global_prune(net, 0.5, score=lambda name, weight: torch.full_like(weight, float("nan")))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
