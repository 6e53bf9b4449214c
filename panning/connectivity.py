"""Effective sparsity and layer collapse: which kept weights still connect the input to the output.

At extreme sparsity a method can prune a whole layer, or leave kept weights that no path from the input to
the output uses; the network then computes a constant, whatever its nominal sparsity says. A kept weight with
no path from input to output is as good as pruned, so every method's result is reported with its effective
sparsity (pruned or disconnected weights) and the layers with no effective weight left (:func:`collapse_report`).

A weight lies on such a path iff it receives a nonzero gradient when the network computes the number of
input-output paths: weights replaced by their 0/1 masks (float64, so path counts of deep networks do not
overflow), biases zeroed, BatchNorm made the identity, max-pooling replaced by average pooling (so no path is
hidden behind another), and an all-ones input.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .masks import Masks

_AVG_FOR_MAX = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d}


def _path_network(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name in masks:
                param.copy_(masks[name].to(param.device, torch.float64))
            elif name.endswith("bias"):
                param.zero_()
            else:  # unmasked weights (dense layers) pass every path through
                param.fill_(1.0)
    _make_path_counting(net)
    return net


def _make_path_counting(module: nn.Module) -> None:
    """Replace BatchNorm by the identity and max- by average pooling, recursively."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        elif type(child) in _AVG_FOR_MAX:
            avg = _AVG_FOR_MAX[type(child)]
            setattr(module, name, avg(child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode))
        else:
            _make_path_counting(child)


def effective_masks(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: tuple[int, ...]) -> Masks:
    """The kept weights that lie on at least one input-output path. `input_shape` excludes the batch."""
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    masks.check(model)
    net = _path_network(model, masks)
    device = next(net.parameters()).device
    params = dict(net.named_parameters())
    for param in net.parameters():
        param.requires_grad_(param in {params[n] for n in masks})
    paths = net(torch.ones((1, *input_shape), dtype=torch.float64, device=device)).sum()
    grads = torch.autograd.grad(paths, [params[n] for n in masks], allow_unused=True)
    return Masks({name: masks[name] & (g != 0) if g is not None else torch.zeros_like(masks[name])
                  for name, g in zip(masks, grads)})


def effective_sparsity(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: tuple[int, ...]) -> float:
    """Fraction of the masked parameters that are pruned or disconnected."""
    return effective_masks(model, masks, input_shape).sparsity


@dataclass(frozen=True)
class CollapseReport:
    """Nominal and effective sparsity of a mask, per-layer densities, and the collapsed layers (every weight
    pruned or disconnected)."""

    sparsity: float
    effective_sparsity: float
    density: dict[str, float]
    effective_density: dict[str, float]
    collapsed: list[str]

    @property
    def collapsed_any(self) -> bool:
        return bool(self.collapsed)


def collapse_report(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape) -> CollapseReport:
    """Measure `masks` on `model` for inputs of `input_shape` (one sample, no batch dimension)."""
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    effective = effective_masks(model, masks, tuple(input_shape))
    return CollapseReport(
        sparsity=masks.sparsity,
        effective_sparsity=effective.sparsity,
        density=masks.density(),
        effective_density=effective.density(),
        collapsed=[name for name, mask in effective.items() if not bool(mask.any())],
    )
