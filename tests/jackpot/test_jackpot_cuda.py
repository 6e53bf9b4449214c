"""Jackpot search steps on a CUDA GPU against the same steps on the CPU.

They run only where a CUDA GPU is visible (scripts/gpu_check.sh runs them there); elsewhere they skip and say
why. float64 keeps TF32 and reduction order out of the comparison, so both devices must pick the same masks.
"""
from __future__ import annotations

import copy

import pytest
import torch

from panning import ops
from panning.arena import except_last
from panning.jackpot import Searcher, SearchSpace, initial_scores, magnitude_mask
from panning.sparsity import layer_budgets
from tests.jackpot.test_jackpot import bundle_2d, segment_counts, small_net

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
CUDA = torch.device("cuda")


def searcher(model, restriction: str) -> Searcher:
    space = SearchSpace(model, except_last(model))
    k = layer_budgets(space.arena, 0.8)
    space.set_scores(initial_scores(space.arena, k, "magnitude"))
    space.set_mask(magnitude_mask(space.arena, k))
    return Searcher(space, k, total_steps=6, restriction=restriction, lr=0.5)


@pytest.mark.parametrize("restriction", ["none", "short"])
def test_search_steps_on_the_gpu_match_the_cpu(restriction):
    model = small_net().double()
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    on_gpu = searcher(copy.deepcopy(model).to(CUDA), restriction)  # SearchSpace swaps the model's layers: copy first
    on_cpu = searcher(model, restriction)
    x, y = bundle_2d().train.tensors
    x = x.double()
    changed = False
    for step in range(6):
        batch = slice(32 * step, 32 * step + 32)
        before = on_gpu.space.mask.clone()
        loss_cpu, _ = on_cpu.step(x[batch], y[batch])
        loss_gpu, _ = on_gpu.step(x[batch].to(CUDA), y[batch].to(CUDA))
        torch.testing.assert_close(loss_gpu.cpu(), loss_cpu)
        space = on_gpu.space
        assert space.mask.device.type == space.scores.device.type == CUDA.type
        assert segment_counts(space.mask.cpu(), space.arena.offsets) == on_gpu.k.tolist()
        if restriction == "none":
            want = ops.topk_mask(space.scores.cpu(), on_gpu.k, offsets=space.arena.offsets, backend="reference")
            assert torch.equal(space.mask.cpu(), want)
        torch.testing.assert_close(space.scores.cpu(), on_cpu.space.scores)
        assert torch.equal(space.mask.cpu(), on_cpu.space.mask)
        changed |= not torch.equal(before, space.mask)
    assert changed, "the search never changed the mask: the test does not exercise it"
    torch.testing.assert_close(on_gpu.counters.cpu(), on_cpu.counters)
    after = dict(on_gpu.space.model.named_parameters())
    for name, before in weights.items():  # the weights stay frozen (the scores are new parameters)
        assert torch.equal(after[name].detach().cpu(), before), name
