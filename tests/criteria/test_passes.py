"""The shared autograd passes: one-pass SNIP/GraSP indices, float32 SynFlow, the flow's flowing weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panning import criteria, models
from panning.arena import Arena
from panning.connectivity import effective_masks
from panning.criteria import passes
from panning.masks import Masks


def small_cnn(seed: int = 0, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("cnn1d", (1, 40), 5, width=0.4).to(dtype)


def test_gradient_pass_gives_w_g_and_w_hg_of_one_pass():
    net = small_cnn().double()
    arena = Arena(net, share=False)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 1, 40, generator=g, dtype=torch.float64), torch.arange(12) % 5
    w = arena.weights.clone()
    t = 200.0

    def loss(flat):  # the network written out with F.conv1d / F.linear, weights from a flat vector
        parts = list(flat.split([p.numel() for p in arena.params]))
        h = x
        convs = [m for m in net if isinstance(m, nn.Conv1d)]
        for conv, part in zip(convs, parts):
            h = F.relu(F.conv1d(h, part.view_as(conv.weight), conv.bias, stride=2, padding=1))
        return F.cross_entropy(F.linear(h.flatten(1), parts[-1].view_as(net[-1].weight), net[-1].bias) / t, y)
    grad = torch.autograd.functional.jacobian(loss, w)
    _, hg = torch.autograd.functional.hvp(loss, w, grad)
    result = passes.gradient_pass(net, arena, (x, y), t)  # one pass: both indices, the loss and |g|^2
    torch.testing.assert_close(result.snip, w * grad, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(result.grasp, w * hg, rtol=1e-7, atol=1e-15)
    assert result.loss == pytest.approx(float(loss(w).detach()), rel=1e-12)
    assert result.gtg == pytest.approx(float(grad @ grad), rel=1e-9)


def test_float32_synflow_agrees_with_float64():
    """float32 is exact enough here: scores within 1e-5 relative, and the 100-step masks equal."""
    net32 = small_cnn(2)
    net64 = small_cnn(2, torch.float64)
    a32, a64 = Arena(net32, share=False), Arena(net64, share=False)
    mask = torch.rand(a32.numel, generator=torch.Generator().manual_seed(0)) < 0.3
    s32 = criteria.synflow(net32, a32, (1, 40), mask=mask)
    s64 = criteria.synflow(net64, a64, (1, 40), mask=mask)
    assert s32.dtype == torch.float32 and s64.dtype == torch.float64
    torch.testing.assert_close(s32.double(), s64, rtol=1e-5, atol=1e-6 * float(s64.abs().max()))
    from panning import prune
    for sparsity in (0.9, 0.99):
        m32 = prune(net32, "synflow", sparsity, input_shape=(1, 40), iterations=100)
        m64 = prune(net64, "synflow", sparsity, input_shape=(1, 40), iterations=100)
        assert all(torch.equal(m32[n], m64[n]) for n in m32)


def test_float32_synflow_falls_back_to_float64_where_it_overflows():
    """Rescaling keeps float32 in range even for weights of 2^100; weights near float32's maximum leave the
    gradients subnormal (fewer significant bits), and only then the flow is taken in float64."""
    torch.manual_seed(0)
    net = nn.Sequential(*[layer for _ in range(4) for layer in (nn.Linear(8, 8, bias=False), nn.ReLU())])
    with torch.no_grad():
        for layer in net[::2]:
            layer.weight.abs_().mul_(2.0 ** 100)
    assert passes.flow(net, Arena(net, share=False), (8,)).grad.dtype == torch.float32
    with torch.no_grad():
        for layer in net[::2]:
            layer.weight.mul_(2.0 ** 26)  # 2^126: dR/dw of the first layer ~ 2^-128
    arena = Arena(net, share=False)
    assert passes.flow(net, arena, (8,)).grad.dtype == torch.float64
    scores = criteria.synflow(net, arena, (8,))
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all() and (scores > 0).all()
    reference = criteria.synflow(net.double(), Arena(net, share=False), (8,))
    ratio = scores.double() / reference
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])), rtol=1e-6, atol=0)


def test_flowing_weights_are_connectivity_effective_mask_without_biases():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 10, bias=False), nn.ReLU(), nn.Linear(10, 10, bias=False), nn.ReLU(),
                        nn.Linear(10, 3, bias=False))
    arena = Arena(net, share=False)
    for keep in (0.5, 0.2, 0.08):
        mask = torch.rand(arena.numel, generator=torch.Generator().manual_seed(int(100 * keep))) < keep
        expected = effective_masks(net, Masks.from_flat(arena, mask), (6,))
        got = passes.flow(net, arena, (6,), mask).flowing()
        assert torch.equal(got, torch.cat([expected[n].flatten() for n in arena.names]))


def test_prune_one_shot_methods_keep_the_top_of_the_public_criteria():
    """panning.prune and the public criteria score with one definition: its masks are the top-k of what
    criteria.snip / grasp / synflow / magnitude return on the same batch (the seed's first class-balanced one)."""
    from panning import criteria, data, ops, prune
    from panning.pbt import Batches
    from panning.sparsity import keep_count
    bundle = data.load("synthetic", num_classes=3, input_shape=(1, 40), n_train=30, n_test=6)
    model = small_cnn()
    arena = Arena(model, share=False)
    batch = Batches(bundle.train, 2, torch.Generator().manual_seed(4), arena.device)(0)
    expected = {"snip": criteria.snip(model, arena, batch), "grasp": criteria.grasp(model, arena, batch),
                "synflow": criteria.synflow(model, arena, (1, 40)), "magnitude": criteria.magnitude(arena)}
    options = {"snip": {"per_class": 2}, "grasp": {"per_class": 2}, "synflow": {"iterations": 1}, "magnitude": {}}
    for method, scores in expected.items():
        masks = prune(model, method, 0.9, bundle, seed=4, **options[method])
        keep = ops.topk_mask(scores, keep_count(arena.numel, 0.9))
        assert torch.equal(masks.to_flat(arena), keep), method

