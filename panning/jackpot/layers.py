"""Score layers: a model transform that searches a mask over frozen weights.

`JackpotNet(model)` freezes every parameter of `model`, lays its prunable weights out in an arena and
replaces each prunable module by a score layer that wraps it. The net owns two flat buffers in the arena's
layout: `scores` (the only trainable parameter) and `mask` (a 0/1 float buffer, the current per-layer
top-k of the scores or its restricted version). Layers compute with `W * mask`; under autograd the mask
is a straight-through view of the scores (value = mask, gradient = identity into the scores), so that

    grad_scores = dL/dW_eff * W      for every weight, pruned ones included.

Linear layers run the fused `panning.ops.masked_linear(..., score_grad=True)`; convolutions run
`conv(x, W * mask_st)`, for which autograd gives the same rule. The weights are never written.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..arena import Arena, Filter, except_last
from ..masks import Masks


class ScoreLayer(nn.Module):
    """Wraps one prunable module; computes with its frozen weight times the current (straight-through) mask.

    Its mask is `bound` by `JackpotNet.forward` for one call (a straight-through view of the scores);
    otherwise it reads its slice of the net's hard mask, so the model "wears" the mask whenever called.
    """

    def __init__(self, layer: nn.Module, mask: torch.Tensor):
        super().__init__()
        self.layer = layer
        self._mask = mask  # view into JackpotNet.mask: not a buffer, it belongs to the net
        self._bound: torch.Tensor | None = None

    def bind(self, mask_st: torch.Tensor | None) -> None:
        self._bound = mask_st

    def current_mask(self) -> torch.Tensor:
        return self._bound if self._bound is not None else self._mask


class ScoreLinear(ScoreLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.current_mask()
        return ops.masked_linear(x, self.layer.weight, mask, self.layer.bias, score_grad=mask.requires_grad)


class ScoreConv(ScoreLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer._conv_forward(x, self.layer.weight * self.current_mask(), self.layer.bias)


_WRAPPERS = {nn.Linear: ScoreLinear, nn.Conv1d: ScoreConv, nn.Conv2d: ScoreConv}


def _submodule_path(name: str) -> tuple[str, str]:
    """('parent.path', 'child') for the module owning the arena parameter `name` (ends in '.weight')."""
    module_path = name.rsplit(".", 1)[0] if "." in name else ""
    if not module_path:
        raise ValueError("model: a bare Linear/Conv cannot be wrapped in place; put it in a container")
    parent, _, child = module_path.rpartition(".")
    return parent, child


class JackpotNet(nn.Module):
    """`model` with its prunable layers replaced by score layers (in place) and frozen parameters.

    include: which prunable layers take part (default: all but the last, the classifier stays dense).
    Build it after moving `model` to its device; it cannot be moved afterwards (its buffers are views).
    The weights, biases and BatchNorm affine parameters are frozen (requires_grad False) and never written;
    BatchNorm running statistics still update in train mode. `unwrap()` restores the original modules.
    """

    def __init__(self, model: nn.Module, *, include: Filter | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if isinstance(model, JackpotNet) or any(isinstance(m, ScoreLayer) for m in model.modules()):
            raise ValueError("model: already wrapped by a JackpotNet")
        if include is None:
            include = except_last(model)
        if not callable(include):
            raise TypeError(f"include: expected a filter (name, module) -> bool, got {type(include).__name__}")
        arena = Arena(model, include=include)
        modules = dict(model.named_modules())
        targets = []
        for name in arena.names:
            parent, child = _submodule_path(name)
            layer = modules[f"{parent}.{child}" if parent else child]
            if type(layer) not in _WRAPPERS:
                raise TypeError(f"include: {name} belongs to a {type(layer).__name__}; only exact Linear, "
                                f"Conv1d and Conv2d layers can be searched")
            targets.append((modules[parent] if parent else model, child, layer))
        # Nothing above changed the model beyond the arena's views; from here on nothing can fail.
        self.arena = arena
        self.model = model
        self._requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        self.scores = nn.Parameter(arena.zeros())
        self.mask = arena.zeros().fill_(1.0)  # not a buffer: DDP must not broadcast it every step
        self._sizes = arena.sizes.tolist()
        self.layers: list[ScoreLayer] = []
        for (parent, child, layer), view in zip(targets, arena.split(self.mask).values()):
            wrapper = _WRAPPERS[type(layer)](layer, view)
            setattr(parent, child, wrapper)
            self.layers.append(wrapper)

    # -- state ----------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The searched parameters, named as in the unwrapped model."""
        return self.arena.names

    def masks(self) -> Masks:
        """The current mask as a `Masks` over the searched parameters (a copy)."""
        return Masks.from_flat(self.arena, self.mask != 0)

    @torch.no_grad()
    def set_mask(self, flat: torch.Tensor) -> None:
        """Replace the current mask by a flat bool buffer in the arena's layout."""
        self.arena._check_flat("flat", flat)
        if flat.dtype != torch.bool:
            raise TypeError(f"flat: expected a bool mask, got {flat.dtype}")
        self.mask.copy_(flat)

    @torch.no_grad()
    def set_scores(self, flat: torch.Tensor) -> None:
        """Replace the scores by a flat floating buffer in the arena's layout (no NaN or infinity)."""
        self.arena._check_flat("flat", flat)
        if not flat.dtype.is_floating_point:
            raise TypeError(f"flat: expected floating scores, got {flat.dtype}")
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("flat: scores must be finite")
        self.scores.copy_(flat)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if not (torch.is_grad_enabled() and self.scores.requires_grad):
            return self.model(*args, **kwargs)
        # value: exactly the mask (s - s is +0 for finite s); gradient: identity into the scores.
        mask_st = self.mask + (self.scores - self.scores.detach())
        # One split (its backward is one concatenation), not a slice per layer.
        for layer, part in zip(self.layers, mask_st.split(self._sizes)):
            layer.bind(part.view(layer.layer.weight.shape))
        try:
            return self.model(*args, **kwargs)
        finally:
            for layer in self.layers:
                layer.bind(None)

    def _apply(self, fn, recurse=True):
        raise RuntimeError("JackpotNet: cannot be moved or cast (its buffers are views); move the model "
                           "before wrapping it")

    def unwrap(self) -> nn.Module:
        """Put the original modules back, restore requires_grad, and return the plain model.

        The weights are untouched; apply `masks()` to zero the pruned ones. The net is unusable afterwards.
        """
        modules = dict(self.model.named_modules())
        for name, wrapper in zip(self.arena.names, self.layers):
            parent, child = _submodule_path(name)
            setattr(modules[parent] if parent else self.model, child, wrapper.layer)
        for name, p in self.model.named_parameters():
            p.requires_grad_(self._requires_grad[name])
        self.layers = []
        return self.model
