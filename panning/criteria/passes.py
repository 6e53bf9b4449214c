"""The autograd passes behind the criteria, shared with the pruning loop of panning.pbt.

These functions trust their arguments: the criteria's scores (panning.criteria.scores) build on them, and
their callers (the public criteria, panning.prune, the environments' constructors) check the model, arena,
batch and mask once, so nothing is re-validated inside a loop of a hundred steps.

- `gradient_pass`: w * g and w * Hg from ONE forward and ONE double backward (SNIP and GraSP of a batch), with the
  loss and |g|^2 of the same pass (the RL environment's dense observation).
- `masked_gradient`: the loss gradient at w * mask (SNIP, FORCE, iterative SNIP).
- `flow`: the SynFlow gradient dR/dw_eff on the |w| * mask network, in float32 where that is exact enough.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import adapter
from ..arena import Arena
from ..ops import product_score
from .functional import Batch, forward, loss, loss_grad, mode

#: Layer outputs of the SynFlow network are kept within [2^-r, 2^r] by exact power-of-two rescaling, with
#: r by the compute dtype: room for one layer's sums (and the backward through it) beyond the bound.
RANGE = {torch.float32: 32, torch.float64: 64}


@dataclass(frozen=True)
class GradientPass:
    """What one forward and one double backward of the dense network on a batch give: SNIP's w * g and GraSP's
    w * Hg (both signed), and the loss and gtg = |g|^2 (float64 sum) the RL environment observes."""

    snip: torch.Tensor
    grasp: torch.Tensor
    loss: float
    gtg: float


def gradient_pass(model: nn.Module, arena: Arena, batch: Batch, temperature: float,
                  weights: torch.Tensor | None = None) -> GradientPass:
    """SNIP, GraSP, loss and gtg at the dense weights w (or `weights`) from one forward in train mode with
    logits / `temperature` and one double backward of the same graph.

    g = dL/dw; Hg = (1/2) d|g|^2/dw, the Hessian-gradient product (the halving is exact, so the ranking
    and the |z| normalization are those of the authors' d|g|^2/dw).
    """
    w = arena.weights.detach() if weights is None else weights
    try:
        grad, double, value = _double_backward(model, arena, batch, temperature, w)
    except RuntimeError as error:
        op = _NO_SECOND_DERIVATIVE.search(str(error))
        if op is None:
            raise
        raise RuntimeError(_no_second_derivative(model, arena, batch, temperature, w, op.group(1))) from None
    return GradientPass(product_score(w, grad, absolute=False), product_score(w, double.mul_(0.5), absolute=False),
                        float(value.detach()), float(grad.double().square().sum()))


#: torch's message for an op whose backward has no derivative of its own.
_NO_SECOND_DERIVATIVE = re.compile(r"derivative for (?:aten::)?(\w+?)_backward is not implemented")


def _double_backward(model, arena, batch, temperature, w):
    """(g, d|g|^2/dw, loss) at weights w; attention runs on the math backend, the one with a second
    derivative (the fused CPU and flash kernels have none)."""
    leaf = w.clone().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        value = loss(model, arena, leaf, batch, temperature=temperature)
        (grad,) = torch.autograd.grad(value, leaf, create_graph=True)
        (double,) = torch.autograd.grad(grad @ grad, leaf)
    return grad.detach(), double, value


def _no_second_derivative(model, arena, batch, temperature, w, op: str) -> str:
    """The one-line error for an op without a second derivative, naming the innermost module whose forward
    ran it: a forward with a hook on every module, each walking the autograd graph its output added."""
    node_type = "".join(part.capitalize() for part in op.split("_")) + "Backward"
    seen: set = set()
    found: list[str] = []
    names = {module: name for name, module in model.named_modules()}

    def walk(module, inputs, output):
        stack = [t.grad_fn for t in torch.utils._pytree.tree_leaves(output)
                 if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if not found and type(node).__name__.startswith(node_type):
                found.append(names.get(module, ""))
            stack.extend(next_node for next_node, _ in node.next_functions)

    handle = torch.nn.modules.module.register_module_forward_hook(walk)
    try:
        with torch.enable_grad():
            loss(model, arena, w.clone().requires_grad_(True), batch, temperature=temperature)
    finally:
        handle.remove()
    where = f"layer {found[0]!r} ({type(model.get_submodule(found[0])).__name__})" if found and found[0] else \
        "the model"
    return (f"model: {where} runs {op}, whose second derivative torch does not implement; GraSP and Panning need "
            "one (a double backward): replace that op, or use a method without it (snip, synflow, magnitude)")


def masked_gradient(model: nn.Module, arena: Arena, batch: Batch, mask: torch.Tensor | None = None,
                    temperature: float = 1.0) -> torch.Tensor:
    """dL/dw_eff at w_eff = w * mask (the dense weights when `mask` is None), flat."""
    weights = arena.weights.detach()
    at = weights if mask is None else weights * mask
    return loss_grad(model, arena, at, batch, temperature=temperature)[1]


@dataclass(frozen=True)
class Flow:
    """The SynFlow network at w_eff = |w| * mask: `weights` (= w_eff) and `grad` = dR/dw_eff * 2^-exponent,
    both in the compute dtype (float32, or float64 where float32 overflows, or the arena's float64)."""

    weights: torch.Tensor
    grad: torch.Tensor
    exponent: int

    def scores(self, dtype: torch.dtype) -> torch.Tensor:
        """SynFlow's scores w_eff * dR/dw_eff (0 where pruned), unscaled where they fit `dtype`."""
        return _to_dtype(product_score(self.weights, self.grad), self.exponent, dtype)

    def signed(self, weights: torch.Tensor) -> torch.Tensor:
        """w * dR/dw_eff for the signed dense `weights` (Panning's index: pruned weights keep a score)."""
        return _to_dtype(product_score(weights.to(self.grad.dtype), self.grad, absolute=False),
                         self.exponent, weights.dtype)

    def flowing(self) -> torch.Tensor:
        """Kept weights that carry synaptic flow (w_eff * dR/dw_eff != 0): the authors' "effective" mask, read
        off the work already done. Not panning.connectivity's effective mask (the library's one meaning of
        effective sparsity): where biases feed a unit whose inputs are all pruned, SynFlow's |bias| carries flow
        on, where connectivity counts input-output paths only; without biases the two agree."""
        return (self.weights * self.grad) != 0


def flow(model: nn.Module, arena: Arena, input_shape: tuple[int, ...], mask: torch.Tensor | None = None) -> Flow:
    """R = sum(f(1)) of the network with every parameter and buffer replaced by its absolute value (arena
    weights also masked), in eval mode on one all-ones input, and its gradient in the arena weights.

    Computed in float32 (float64 for a float64 arena). Out-of-range layer outputs are rescaled by powers of
    two (exact when biases are zero, and the bias is negligible wherever a rescale fires); float64 is used
    only where float32 still fails (a non-finite |w| * gradient, or a subnormal gradient), which takes
    weights near float32's range: the rescaling keeps every layer's output, and so the backward, in range.
    """
    dtype = torch.float64 if arena.weights.dtype == torch.float64 else torch.float32
    result = _flow(model, arena, input_shape, mask, dtype)
    if dtype != torch.float64 and not bool(in_range(result.grad, arena.weights.detach())):
        result = _flow(model, arena, input_shape, mask, torch.float64)
    return result


def in_range(grad: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Whether a float32 flow is exact enough, per row of `grad` (..., N): |w| * gradient finite, and no nonzero
    gradient subnormal (below the smallest normal float32 it keeps fewer than 24 significant bits)."""
    magnitude = grad.abs()
    subnormal = ((magnitude < torch.finfo(grad.dtype).tiny) & (magnitude > 0)).any(-1)
    return torch.isfinite(weights.abs() * grad).all(-1) & ~subnormal


def _flow(model, arena, input_shape, mask, dtype) -> Flow:
    weights = arena.weights.detach().to(dtype).abs()
    if mask is not None:
        weights = weights * mask
    leaf = weights.requires_grad_(True)
    others = {name: p.detach().to(dtype).abs() for name, p in adapter.others(model, arena.params).items()}
    buffers = {name: b.detach().to(dtype).abs() if b.is_floating_point() else b.clone()
               for name, b in model.named_buffers()}
    exponents: list[int] = []
    layers = sorted({name.rpartition(".")[0] for name in arena.names})
    with mode(model, False), adapter.rescaled_outputs(model, layers, exponents, RANGE[dtype]), \
            adapter.data_free(model, input_shape, dtype, arena.device) as ones:
        total = arena.logits(forward(model, arena, leaf, ones, others, buffers=buffers)).sum()
    (grad,) = torch.autograd.grad(total, leaf)
    return Flow(leaf.detach(), grad, sum(exponents))


def _to_dtype(scores: torch.Tensor, exponent: int, dtype: torch.dtype) -> torch.Tensor:
    """Scores computed at scale 2^-exponent, in `dtype`: unscaled where they fit, else as large as fits."""
    peak = scores.abs().amax() if scores.numel() else scores.new_zeros(())
    if peak > 0:
        top = int(torch.frexp(peak).exponent)          # peak < 2^top
        limit = math.frexp(torch.finfo(dtype).max)[1] - 8  # headroom: sums of many scores stay finite
        exponent = max(min(exponent, limit - top), -limit - top)
    if exponent:
        scores = torch.ldexp(scores, torch.tensor(exponent, dtype=scores.dtype, device=scores.device))
    return scores.to(dtype)
