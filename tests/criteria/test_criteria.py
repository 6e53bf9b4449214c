"""Each criterion against an independent computation on small float64 networks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panning import criteria
from panning.arena import Arena

torch.set_default_dtype(torch.float32)


def mlp(*widths: int, bias: bool = True, act: type[nn.Module] = nn.Tanh, seed: int = 0) -> nn.Sequential:
    """A float64 MLP (Linear, act, ..., Linear) with nonzero biases where `bias`."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(act())
    net = nn.Sequential(*layers).double()
    if bias:
        with torch.no_grad():
            for layer in net:
                if isinstance(layer, nn.Linear):
                    layer.bias.normal_(0, 0.3)
    return net


def batch(n: int = 12, features: int = 5, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, features, generator=g, dtype=torch.float64),
            torch.arange(n) % classes)


def manual_loss(net: nn.Sequential, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, t: float = 1.0):
    """Cross-entropy of the MLP written out with F.linear, weights from a flat vector: the oracle."""
    h, start = x, 0
    for layer in net:
        if isinstance(layer, nn.Linear):
            size = layer.weight.numel()
            h = F.linear(h, flat[start:start + size].view_as(layer.weight), layer.bias)
            start += size
        else:
            h = layer(h)
    return F.cross_entropy(h / t, y)


def small_problem():
    """The 5-6-4-3 MLP, its arena and a batch: the network the gradient criteria are checked on."""
    net = mlp(5, 6, 4, 3)
    return (net, Arena(net, share=False), *batch())


def random_mask(n: int, keep: float = 0.6, seed: int = 2) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) < keep


# -- magnitude / random ------------------------------------------------------------------------------

def test_magnitude_is_abs_of_the_arena():
    net = mlp(5, 4, 3)
    arena = Arena(net, share=False)
    assert torch.equal(criteria.magnitude(arena), arena.weights.abs())


def test_random_is_uniform_and_seeded():
    arena = Arena(mlp(20, 30, 10), share=False)
    a = criteria.random(arena, generator=torch.Generator().manual_seed(3))
    b = criteria.random(arena, generator=torch.Generator().manual_seed(3))
    c = criteria.random(arena, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == arena.weights.dtype and 0 <= float(a.min()) and float(a.max()) < 1
    assert abs(float(a.mean()) - 0.5) < 0.05


# -- SNIP, FORCE, iterative SNIP: finite differences of the loss in the mask ------------------------

def mask_fd(net, arena, x, y, gate: torch.Tensor, i: int, h: float = 1e-6) -> float:
    """d L(w * c) / d c_i at c = gate by central differences."""
    w = arena.weights
    up, down = gate.clone(), gate.clone()
    up[i] += h
    down[i] -= h
    with torch.no_grad():
        return float((manual_loss(net, w * up, x, y) - manual_loss(net, w * down, x, y)) / (2 * h))


def test_snip_is_the_mask_derivative_of_the_loss():
    net, arena, x, y = small_problem()
    scores = criteria.snip(net, arena, (x, y))
    ones = torch.ones(arena.numel, dtype=torch.float64)
    for i in range(0, arena.numel, 7):
        assert scores[i].item() == pytest.approx(abs(mask_fd(net, arena, x, y, ones, i)), rel=1e-5, abs=1e-9)


def test_force_scores_pruned_weights_at_the_pruned_point():
    net, arena, x, y = small_problem()
    mask = random_mask(arena.numel)
    scores = criteria.force(net, arena, (x, y), mask)
    gate = mask.double()
    pruned = torch.nonzero(~mask).flatten()[:10].tolist()
    kept = torch.nonzero(mask).flatten()[:10].tolist()
    for i in pruned + kept:
        assert scores[i].item() == pytest.approx(abs(mask_fd(net, arena, x, y, gate, i)), rel=1e-5, abs=1e-9)
    assert (scores[~mask] > 0).any()  # pruned weights are scored: they can come back


def test_iterative_snip_keeps_pruned_weights_pruned():
    net, arena, x, y = small_problem()
    mask = random_mask(arena.numel)
    scores = criteria.iterative_snip(net, arena, (x, y), mask)
    assert torch.isneginf(scores[~mask]).all()
    assert torch.equal(scores[mask], criteria.force(net, arena, (x, y), mask)[mask])
    # at the pruned point, not the dense one
    assert not torch.allclose(scores[mask], criteria.snip(net, arena, (x, y))[mask])


# -- GraSP: Hg against torch.autograd.functional.hvp -------------------------------------------------

def test_grasp_is_w_times_hessian_gradient_product_at_temperature():
    net, arena, x, y = small_problem()
    t = 7.0
    w = arena.weights.detach()
    loss = lambda flat: manual_loss(net, flat, x, y, t)  # noqa: E731
    g = torch.autograd.functional.jacobian(loss, w)
    _, hg = torch.autograd.functional.hvp(loss, w, g)
    scores = criteria.grasp(net, arena, (x, y), temperature=t)
    torch.testing.assert_close(scores, w * hg, rtol=1e-7, atol=1e-12)
    assert (scores > 0).any() and (scores < 0).any()  # signed: the sign convention matters


def test_grasp_default_temperature_is_200():
    net = mlp(5, 6, 3)
    arena = Arena(net, share=False)
    x, y = batch()
    assert criteria.TEMPERATURE == 200
    torch.testing.assert_close(criteria.grasp(net, arena, (x, y)),
                               criteria.grasp(net, arena, (x, y), temperature=200.0))
    assert not torch.allclose(criteria.grasp(net, arena, (x, y)),
                              criteria.grasp(net, arena, (x, y), temperature=1.0))


# -- SynFlow ----------------------------------------------------------------------------------------

def synflow_oracle(net: nn.Sequential, mask: torch.Tensor, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, R) of SynFlow written out: |W| * m chained on a ones vector, biases |b|, float64."""
    weights = [layer.weight.detach().abs() for layer in net if isinstance(layer, nn.Linear)]
    biases = [None if layer.bias is None else layer.bias.detach().abs()
              for layer in net if isinstance(layer, nn.Linear)]
    masks, start = [], 0
    for w in weights:
        masks.append(mask[start:start + w.numel()].view_as(w).double())
        start += w.numel()
    leaves = [(w * m).requires_grad_() for w, m in zip(weights, masks)]
    h = torch.ones(1, features, dtype=torch.float64)
    for i, (w, b) in enumerate(zip(leaves, biases)):
        h = F.linear(h, w, b)
        if i < len(leaves) - 1:
            h = torch.relu(h)
    r = h.sum()
    grads = torch.autograd.grad(r, leaves)
    return torch.cat([(w * g).flatten() for w, g in zip(leaves, grads)]).detach(), r.detach()


def test_synflow_matches_the_written_out_network():
    net = mlp(5, 7, 6, 3, act=nn.ReLU)
    arena = Arena(net, share=False)
    mask = random_mask(arena.numel, 0.7)
    expected, _ = synflow_oracle(net, mask, 5)
    torch.testing.assert_close(criteria.synflow(net, arena, (5,), mask=mask), expected)
    assert not criteria.synflow(net, arena, (5,), mask=mask)[~mask].any()  # pruned weights score 0


def test_synflow_conserves_flow_per_neuron_and_per_layer():
    net = mlp(6, 8, 7, 4, bias=False, act=nn.ReLU)
    arena = Arena(net, share=False)
    mask = random_mask(arena.numel, 0.5, seed=5)
    scores = criteria.synflow(net, arena, (6,), mask=mask)
    _, r = synflow_oracle(net, mask, 6)
    layers = list(arena.split(scores).values())
    for layer in layers:  # every layer carries the whole flow R
        assert float(layer.sum()) == pytest.approx(float(r), rel=1e-10)
    for into, out in zip(layers, layers[1:]):  # flow into each hidden neuron == flow out of it
        torch.testing.assert_close(into.sum(1), out.sum(0), rtol=1e-10, atol=1e-12)


def test_synflow_conserves_flow_through_a_cnn_with_batchnorm_in_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, bias=False), nn.BatchNorm1d(4), nn.ReLU(),
                        nn.Conv1d(4, 3, 3, stride=2, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 5))
    nn.init.zeros_(net[-1].bias)
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 2.0)  # a per-channel scale; bias and running statistics as initialized
    net.train()
    arena = Arena(net, share=False)
    scores = criteria.synflow(net, arena, (2, 10))
    totals = [float(s.sum()) for s in arena.split(scores.double()).values()]
    assert totals[1] == pytest.approx(totals[0], rel=1e-5) and totals[2] == pytest.approx(totals[0], rel=1e-5)
    assert net.training  # mode restored


def test_synflow_is_safe_where_the_flow_overflows_float64():
    depth, width = 72, 16
    net = mlp(*([width] * depth), bias=False, act=nn.ReLU)
    with torch.no_grad():
        for layer in net[::2]:  # |w| sums to about 1 per row: the flow stays near 1 through every layer
            layer.weight.abs_().div_(layer.weight.sum(1, keepdim=True))
    small = criteria.synflow(net, Arena(net, share=False), (width,))
    with torch.no_grad():
        for layer in net[::2]:  # now the flow grows 2^15 per layer: about 2^1065, beyond float64
            layer.weight.mul_(2.0 ** 15)
    _, plain = synflow_oracle(net, torch.ones(sum(p.numel() for p in net.parameters()), dtype=torch.bool), width)
    assert torch.isinf(plain)  # the plain float64 computation overflows
    scores = criteria.synflow(net, Arena(net, share=False), (width,))
    assert torch.isfinite(scores).all() and (scores > 0).all()
    ratio = scores.double() / small.double()  # every score scaled by the same power of two
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])), rtol=1e-5, atol=0)
    assert float(ratio[0]) == 2.0 ** round(torch.log2(ratio[0]).item())


# -- all criteria: the model is not modified; arguments are checked -----------------------------------

def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def test_criteria_leave_the_model_unchanged():
    net = bn_net().eval()
    arena = Arena(net, share=False)
    x, y = torch.randn(6, 1, 6, 6), torch.arange(6) % 3
    before = {k: v.clone() for k, v in net.state_dict().items()}
    mask = torch.rand(arena.numel) < 0.5
    for scores in (criteria.snip(net, arena, (x, y)), criteria.grasp(net, arena, (x, y)),
                   criteria.synflow(net, arena, (1, 6, 6), mask=mask), criteria.force(net, arena, (x, y), mask)):
        assert scores.shape == (arena.numel,) and scores.dtype == torch.float32
        assert not torch.isnan(scores).any()
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())


def test_criteria_check_their_arguments():
    net = bn_net()
    arena = Arena(net, share=False)
    good = (torch.randn(6, 1, 6, 6), torch.arange(6) % 3)
    with pytest.raises(ValueError, match=r"^batch: .*; got inputs torch.float32 \(6, 1, 6, 6\) on cpu, labels "
                                         r"torch.int64 \(3,\) on cpu$"):
        criteria.snip(net, arena, (good[0], good[1][:3]))
    with pytest.raises(ValueError, match="batch"):
        criteria.snip(net, arena, (good[0], good[1].int().long().view(2, 3)))
    with pytest.raises(ValueError, match="batch"):  # an empty batch would score NaN
        criteria.snip(net, arena, (good[0][:0], good[1][:0]))
    with pytest.raises(TypeError, match="mask"):
        criteria.force(net, arena, good, torch.ones(arena.numel))
    with pytest.raises(ValueError, match="mask"):
        criteria.synflow(net, arena, (1, 6, 6), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="arena"):
        criteria.snip(mlp(3, 2), arena, good)
    with pytest.raises(ValueError, match="temperature"):
        criteria.grasp(net, arena, good, temperature=0)
    with pytest.raises(ValueError, match="input_shape"):
        criteria.synflow(net, arena, (1, 0, 6))
