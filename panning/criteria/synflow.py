"""SynFlow: iterative synaptic flow conservation (Tanaka et al., NeurIPS 2020), data-free."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from ..arena import Arena
from ..ops import product_score
from . import _checks
from ._functional import forward, mode

# Layer outputs are kept within [2^-RANGE, 2^RANGE] by exact power-of-two rescaling (see synflow()).
RANGE = 64


def synflow(model: nn.Module, arena: Arena, input_shape, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """|w| * m * dR/d(|w| * m) over the arena, where R = sum(f(1)) is the summed output of the network with
    every parameter replaced by its absolute value (arena weights also masked), on an all-ones input.

    BatchNorm runs in eval mode (its running statistics, made non-negative like everything else) and the
    computation is in float64. For the score to be conserved, pruned weights score 0.

    Deep networks: R is a product over layers and overflows (or underflows) even float64. Any prunable
    layer output outside [2^-64, 2^64] is rescaled by a power of two; for the usual zero-bias
    initialization that scales every score by the same power of two, so the ranking is exact. The
    scale is undone where the true scores fit the arena's dtype, else the scores come back scaled by a
    power of two that keeps the largest one representable (the ranking is all any mask uses).
    """
    _checks.model_and_arena(model, arena)
    shape = _checks.input_shape(input_shape)
    dtype = arena.weights.dtype
    weights = arena.weights.detach().to(torch.float64).abs()
    if mask is not None:
        weights = weights * _checks.mask(mask, arena)
    leaf = weights.requires_grad_(True)
    others = {name: p.detach().to(torch.float64).abs() for name, p in model.named_parameters()
              if name not in set(arena.names)}
    ones = torch.ones((1, *shape), dtype=torch.float64, device=arena.device)
    exponents: list[int] = []
    with mode(model, False), _rescaled_outputs(model, arena, exponents):
        flow = forward(model, arena, leaf, ones, others, buffers=_float64_buffers(model)).sum()
    (grad,) = torch.autograd.grad(flow, leaf)
    scores = product_score(leaf.detach(), grad)
    return _to_dtype(scores, sum(exponents), dtype)


def _float64_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Floating buffers (BatchNorm statistics) as non-negative float64 copies; others copied as they are."""
    return {name: b.detach().to(torch.float64).abs() if b.is_floating_point() else b.clone()
            for name, b in model.named_buffers()}


@contextlib.contextmanager
def _rescaled_outputs(model: nn.Module, arena: Arena, exponents: list[int]) -> Iterator[None]:
    """Forward hooks on the arena's layers that divide an out-of-range output by 2^e and record e."""
    def hook(module, inputs, output):
        peak = output.detach().abs().amax()
        if peak > 0 and not 2.0 ** -RANGE <= peak <= 2.0 ** RANGE:
            exponent = int(torch.frexp(peak).exponent)
            exponents.append(exponent)
            return torch.ldexp(output, torch.tensor(-exponent, dtype=output.dtype, device=output.device))
        return None

    modules = {name.rpartition(".")[0] for name in arena.names}
    handles = [model.get_submodule(name).register_forward_hook(hook) for name in sorted(modules)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _to_dtype(scores: torch.Tensor, exponent: int, dtype: torch.dtype) -> torch.Tensor:
    """float64 scores computed at scale 2^-exponent, in `dtype`: unscaled where they fit, else as large as fits."""
    peak = scores.abs().amax() if scores.numel() else scores.new_zeros(())
    if peak > 0:
        top = int(torch.frexp(peak).exponent)          # peak < 2^top
        limit = math.frexp(torch.finfo(dtype).max)[1] - 8  # headroom: sums of many scores stay finite
        exponent = max(min(exponent, limit - top), -limit - top)
    if exponent:
        scores = torch.ldexp(scores, torch.tensor(exponent, dtype=scores.dtype, device=scores.device))
    return scores.to(dtype)
