"""One network evaluated at B weight vectors at once ("lanes"), each layer lowered to one GEMM over the lanes.

The RL environment (panning.pbt.env.PanningLanes) needs, for each of B masks of one network, the masked loss
with its gradient on a batch and the SynFlow pass of the |w| * mask network. Run one lane at a time, each of
these is a chain of small convolutions (oneDNN on a 1-D CNN of 100 samples: ~20 GFLOP/s on one core, SynFlow
on one all-ones input: per-op overhead only). Here the lanes go through the network together: activations are
kept channels-last, (lanes, samples, length, channels), a Conv1d becomes k strided slices concatenated
(im2col) and one batched GEMM with the lanes' weights, a Linear one batched GEMM; where the input is shared by
every lane (the first layer: the lanes of one step see one batch) it is one GEMM against all lanes' weights
side by side. Autograd differentiates the lowered graph. Results equal the per-lane passes to float rounding
(tests/criteria/test_lanes.py); tied scores are rare, so the masks they lead to are equal in the tests.

Only plain stacks are lowered: an nn.Sequential of Conv1d (groups 1, dilation 1, zero padding), Linear, ReLU
and Flatten, whose arena holds exactly the Conv1d/Linear weights and which has no buffers. `supports` says
whether a model is one; callers run the per-lane passes otherwise (BatchNorm nets, 2-D convolutions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..arena import Arena
from ._functional import Batch
from .passes import RANGE, Flow, _in_range, flow


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


def loss_grad(model: nn.Module, arena: Arena, flats: torch.Tensor, batch: Batch, *,
              temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses (B,), gradients (B, N)): for each row w of `flats` the mean cross-entropy of model(x) / temperature
    at arena weights w (other parameters the model's) and its gradient in w, as
    panning.criteria._functional.loss_grad computes it for one row."""
    x, y = batch
    leaf = flats.detach().requires_grad_(True)
    lanes = leaf.shape[0]
    logits = _forward(model, arena, leaf, x, {n: p.detach() for n, p in model.named_parameters()})
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]) / temperature, y.repeat(lanes),
                             reduction="none").view(lanes, -1).mean(1)
    (grad,) = torch.autograd.grad(losses.sum(), leaf)
    return losses.detach(), grad


def flows(model: nn.Module, arena: Arena, input_shape: tuple[int, ...], masks: torch.Tensor) -> list[Flow]:
    """The SynFlow pass (panning.criteria.passes.flow) of each row of `masks` (B, N), the lanes together: same
    dtype rule, same power-of-two rescaling of each layer's output (per lane), and a lane whose float32 result
    is not exact enough is recomputed alone by passes.flow (which falls back to float64)."""
    dtype = torch.float64 if arena.weights.dtype == torch.float64 else torch.float32
    weights = arena.weights.detach().to(dtype).abs() * masks
    leaf = weights.requires_grad_(True)
    others = {name: p.detach().to(dtype).abs() for name, p in model.named_parameters()}
    ones = torch.ones((1, *input_shape), dtype=dtype, device=arena.device)
    exponents = torch.zeros(masks.shape[0], dtype=torch.int64, device=arena.device)
    total = _forward(model, arena, leaf, ones, others, rescale=(RANGE[dtype], exponents)).sum()
    (grad,) = torch.autograd.grad(total, leaf)
    result = []
    for b, exponent in enumerate(exponents.tolist()):
        lane = Flow(leaf[b].detach(), grad[b], exponent)
        if dtype != torch.float64 and not _in_range(lane.grad, lane.weights):
            lane = flow(model, arena, input_shape, masks[b])
        result.append(lane)
    return result


def _forward(model: nn.Module, arena: Arena, flats: torch.Tensor, x: torch.Tensor,
             params: dict[str, torch.Tensor], rescale: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Logits (B, samples, classes) of the lowered stack at the B arena weight rows `flats` on input `x`
    (samples, channels, length) or (samples, features), shared by the lanes. With `rescale` = (r, exponents),
    every Conv1d/Linear output outside [2^-r, 2^r] in a lane is divided by 2^e (e from its peak) and e added to
    that lane's entry of `exponents`, as passes.flow's hooks do."""
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
            bias = params.get(f"{name}.bias")
            if bias is not None:
                h = h + bias
            if rescale is not None:
                h = _rescaled(h, *rescale)
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
