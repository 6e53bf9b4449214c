"""The lanes' SynFlow (one network at B masks, each layer one GEMM over the lanes) against passes.flow of each mask:
gradients, rescaling exponents, flowing weights, the float64 fallback, and which networks are lowered."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from panning import models
from panning.arena import Arena, except_last
from panning.criteria import lanes, passes


def cnn(seed=0, width=0.4, dtype=torch.float32):
    torch.manual_seed(seed)
    net = models.build("cnn1d", (1, 40), 5, width=width).to(dtype)
    with torch.no_grad():  # nonzero biases, so that they are exercised
        for layer in net:
            if getattr(layer, "bias", None) is not None:
                layer.bias.uniform_(-0.1, 0.1)
    return net


def odd_stack():
    """Conv1d with kernel 4, stride 3, padding 2 and no bias, a second conv, then two Linear layers."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv1d(3, 7, 4, stride=3, padding=2, bias=False), nn.ReLU(), nn.Conv1d(7, 5, 2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4, 6), nn.ReLU(), nn.Linear(6, 4, bias=False))


def mlp():
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 3))


CASES = [(cnn, (1, 40)), (odd_stack, (3, 14)), (mlp, (3, 4))]


@pytest.mark.parametrize("build, shape", CASES)
def test_flows_of_every_lane_equal_the_per_mask_pass(build, shape):
    net = build()
    arena = Arena(net, share=False)
    assert lanes.supports(net, arena, shape)
    masks = torch.rand(6, arena.numel, generator=torch.Generator().manual_seed(3)) \
        < torch.tensor([1.0, 0.7, 0.4, 0.2, 0.08, 0.0]).view(6, 1)
    got = lanes.flows(net, arena, shape, masks)
    weights = arena.weights
    for b in range(6):
        expected = passes.flow(net, arena, shape, masks[b])
        assert got[b].exponent == expected.exponent and got[b].grad.dtype == expected.grad.dtype
        assert torch.equal(got[b].weights, expected.weights)
        assert torch.equal(got[b].flowing(), expected.flowing())
        scale = float(expected.grad.abs().max()) + 1e-30
        torch.testing.assert_close(got[b].grad, expected.grad, rtol=1e-5, atol=1e-6 * scale)
        torch.testing.assert_close(got[b].signed(weights), expected.signed(weights), rtol=1e-5,
                                   atol=1e-6 * float(expected.signed(weights).abs().max()) + 1e-30)


def test_flows_rescale_each_lane_by_its_own_powers_of_two():
    """Weights of 2^40 push one lane's layer outputs out of float32's [2^-32, 2^32] window; a lane whose mask
    keeps few weights stays in range. Each lane's exponent is the per-mask pass's."""
    net = nn.Sequential(*[layer for _ in range(3) for layer in (nn.Linear(8, 8, bias=False), nn.ReLU())])
    torch.manual_seed(4)
    with torch.no_grad():
        for layer in net[::2]:
            layer.weight.abs_().mul_(2.0 ** 40)
    arena = Arena(net, share=False)
    masks = torch.stack([torch.ones(arena.numel, dtype=torch.bool),
                         torch.rand(arena.numel, generator=torch.Generator().manual_seed(5)) < 0.1])
    got = lanes.flows(net, arena, (8,), masks)
    exponents = [passes.flow(net, arena, (8,), m).exponent for m in masks]
    assert [f.exponent for f in got] == exponents and exponents[0] > 0
    for flow, mask in zip(got, masks):
        expected = passes.flow(net, arena, (8,), mask)
        torch.testing.assert_close(flow.grad, expected.grad, rtol=1e-5, atol=0)


def test_a_lane_out_of_float32_range_is_recomputed_in_float64():
    net = nn.Sequential(*[layer for _ in range(4) for layer in (nn.Linear(8, 8, bias=False), nn.ReLU())])
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in net[::2]:
            layer.weight.abs_().mul_(2.0 ** 126)  # dR/dw of the first layer ~ 2^-128: subnormal in float32
    arena = Arena(net, share=False)
    masks = torch.ones(2, arena.numel, dtype=torch.bool)
    masks[1, : arena.numel // 2] = False
    got = lanes.flows(net, arena, (8,), masks)
    for flow, mask in zip(got, masks):
        expected = passes.flow(net, arena, (8,), mask)
        assert flow.grad.dtype == expected.grad.dtype
        assert torch.equal(flow.grad, expected.grad) and flow.exponent == expected.exponent


def test_float64_arena_stays_float64():
    net = cnn(dtype=torch.float64)
    arena = Arena(net, share=False)
    masks = torch.rand(2, arena.numel, generator=torch.Generator().manual_seed(6)) < 0.5
    for flow, mask in zip(lanes.flows(net, arena, (1, 40), masks), masks):
        expected = passes.flow(net, arena, (1, 40), mask)
        assert flow.grad.dtype == torch.float64
        torch.testing.assert_close(flow.grad, expected.grad, rtol=1e-12, atol=1e-14 * float(expected.grad.abs().max()))


def test_only_plain_stacks_are_lowered():
    net = cnn()
    assert lanes.supports(net, Arena(net, share=False), (1, 40))
    torch.manual_seed(0)
    cnn2d = models.build("cnn2d", (1, 8, 8), 10)
    assert not lanes.supports(cnn2d, Arena(cnn2d, share=False), (1, 8, 8))  # BatchNorm, 2-D convolutions
    assert not lanes.supports(net, Arena(net, share=False, include=except_last(net)), (1, 40))  # dense classifier
    no_flatten = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Linear(38, 3))  # Linear over the length axis
    assert not lanes.supports(no_flatten, Arena(no_flatten, share=False), (1, 40))
    dilated = nn.Sequential(nn.Conv1d(1, 2, 3, dilation=2), nn.Flatten(), nn.Linear(72, 3))
    assert not lanes.supports(dilated, Arena(dilated, share=False), (1, 40))
