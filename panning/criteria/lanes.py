"""The SynFlow pass of one network at B masks at once ("lanes"), each layer lowered to one GEMM over the lanes.

The RL environment (panning.pbt.rl.env.PanningLanes) needs the SynFlow pass of each of its B lanes' new masks every
step. One mask at a time, that pass is a batch-of-one forward and backward whose cost is per-op overhead. Here
the lanes go through the network together: activations kept channels-last, (lanes, samples, length, channels);
a Conv1d becomes its k strided slices side by side (im2col) times the lanes' weights in one batched GEMM, a Linear
one batched GEMM; where the input is shared by every lane (the all-ones input) it is one GEMM against all lanes'
weights side by side. Autograd differentiates the lowered graph. Measured on cnn1d width 4, 8 masks, one thread:
2x the per-mask loop (bench/results/agent-env.md). Results equal passes.flow of each mask to float rounding
(tests/criteria/test_lanes.py).

The same lowering for the lanes' masked loss and gradient (100 samples) measured no faster than one oneDNN pass
per lane on this CPU (8 lanes: the lowered GEMMs run at 30-60 GFLOP/s, but the lanes' activations leave the
cache), so the environment keeps that per lane.

Only plain stacks are lowered: an nn.Sequential of Conv1d (groups 1, dilation 1, zero padding), Linear, ReLU
and Flatten, whose arena holds exactly the Conv1d/Linear weights and which has no buffers. `supports` says
whether a model is one; callers run passes.flow per mask otherwise (BatchNorm nets, 2-D convolutions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..arena import Arena
from .passes import RANGE, Flow, flow, in_range


def supports(model: nn.Module, arena: Arena, input_shape: tuple[int, ...]) -> bool:
    """Whether `model` on inputs of `input_shape` ((features,) or (channels, length)) is a stack the lanes can
    lower (module docstring): Conv1d only before the Flatten, Linear only after it (or on flat inputs)."""
    if not isinstance(model, nn.Sequential) or any(True for _ in model.buffers()) or len(input_shape) not in (1, 2):
        return False
    spatial = len(input_shape) == 2
    weights = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Conv1d):
            if not spatial or layer.groups != 1 or layer.dilation != (1,) or layer.padding_mode != "zeros" \
                    or isinstance(layer.padding, str):
                return False
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                return False
            spatial = False
        elif isinstance(layer, nn.Linear):
            if spatial:
                return False
        elif not isinstance(layer, nn.ReLU):
            return False
        if isinstance(layer, (nn.Conv1d, nn.Linear)):
            weights.append(f"{name}.weight")
    return list(arena.names) == weights


def flows(model: nn.Module, arena: Arena, input_shape: tuple[int, ...], masks: torch.Tensor) -> list[Flow]:
    """The SynFlow pass (panning.criteria.passes.flow) of each row of `masks` (B, N), the lanes together: same
    dtype rule, same power-of-two rescaling of each layer's output (per lane), and a lane whose float32 result
    is not exact enough is recomputed alone by passes.flow (which falls back to float64)."""
    dtype = torch.float64 if arena.weights.dtype == torch.float64 else torch.float32
    weights = arena.weights.detach().to(dtype).abs() * masks
    leaf = weights.requires_grad_(True)
    biases = {name: p.detach().to(dtype).abs() for name, p in model.named_parameters() if name not in arena.names}
    ones = torch.ones((1, *input_shape), dtype=dtype, device=arena.device)
    exponents = torch.zeros(masks.shape[0], dtype=torch.int64, device=arena.device)
    total = _forward(model, arena, leaf, ones, biases, RANGE[dtype], exponents).sum()
    (grad,) = torch.autograd.grad(total, leaf)
    exact = in_range(grad, arena.weights.detach()).tolist() if dtype != torch.float64 else [True] * len(masks)
    return [Flow(leaf[b].detach(), grad[b], exponent) if ok else flow(model, arena, input_shape, masks[b])
            for b, (exponent, ok) in enumerate(zip(exponents.tolist(), exact))]


def _forward(model: nn.Module, arena: Arena, flats: torch.Tensor, x: torch.Tensor, biases: dict[str, torch.Tensor],
             bound: int, exponents: torch.Tensor) -> torch.Tensor:
    """Outputs (B, samples, classes) of the lowered stack at the B arena weight rows `flats` on input `x`
    (samples, channels, length) or (samples, features), shared by the lanes. Every Conv1d/Linear output (bias
    added) outside [2^-bound, 2^bound] in a lane is divided by 2^e (e from its peak) and e added to that lane's
    entry of `exponents`, as passes.flow's hooks do."""
    lanes, samples = flats.shape[0], x.shape[0]
    bounds = arena.offsets.tolist()
    views = {name: flats[:, bounds[i]:bounds[i + 1]].view(lanes, *shape)
             for i, (name, shape) in enumerate(zip(arena.names, arena.shapes))}
    h = (x.transpose(1, 2) if x.dim() == 3 else x).unsqueeze(0)  # (1, samples, [length,] channels)
    for name, layer in model.named_children():
        if isinstance(layer, nn.Conv1d):
            h = _conv1d(h, views[f"{name}.weight"], layer)
        elif isinstance(layer, nn.Linear):
            h = _linear(h, views[f"{name}.weight"])
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
        else:  # Flatten: torch's order is channel-major
            h = h.transpose(2, 3).reshape(h.shape[0], samples, -1) if h.dim() == 4 else h
        if isinstance(layer, (nn.Conv1d, nn.Linear)):
            bias = biases.get(f"{name}.bias")
            if bias is not None:
                h = h + bias
            h = _rescaled(h, bound, exponents)
    return h


def _linear(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(b, samples, in) x lanes' (B, out, in) weights -> (B, samples, out); b = 1 (shared input) or B."""
    lanes, out, features = weight.shape
    if h.shape[0] == 1:
        return (h[0] @ weight.reshape(lanes * out, features).T).view(-1, lanes, out).transpose(0, 1)
    return torch.bmm(h, weight.transpose(1, 2))


def _conv1d(h: torch.Tensor, weight: torch.Tensor, layer: nn.Conv1d) -> torch.Tensor:
    """(b, samples, length, in) channels-last -> (B, samples, out length, out): k strided slices side by side
    (im2col, tap-major) times the lanes' weights in the same order."""
    lanes, out, channels, k = weight.shape
    (stride,), (padding,) = layer.stride, layer.padding
    h = F.pad(h, (0, 0, padding, padding))
    length = (h.shape[2] - k) // stride + 1
    cols = torch.cat([h[:, :, j:j + stride * (length - 1) + 1:stride, :] for j in range(k)], dim=3)
    cols = cols.reshape(h.shape[0], -1, k * channels)
    taps = weight.permute(0, 3, 2, 1).reshape(lanes, k * channels, out)
    if h.shape[0] == 1:
        y = (cols[0] @ taps.permute(1, 0, 2).reshape(k * channels, lanes * out)).view(-1, lanes, out)
        y = y.transpose(0, 1)
    else:
        y = torch.bmm(cols, taps)
    return y.reshape(lanes, h.shape[1], length, out)


def _rescaled(h: torch.Tensor, bound: int, exponents: torch.Tensor) -> torch.Tensor:
    peak = h.detach().abs().flatten(1).amax(1)
    out = (peak > 0) & ((peak < 2.0 ** -bound) | (peak > 2.0 ** bound))
    if not bool(out.any()):
        return h
    shift = torch.where(out, torch.frexp(peak).exponent.to(torch.int64), 0)
    exponents += shift
    return torch.ldexp(h, (-shift).to(h.dtype).view(-1, *([1] * (h.dim() - 1))))
