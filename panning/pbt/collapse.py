"""Layer-collapse detection: what a mask leaves of the network's input-output paths.

At extreme sparsity a method can prune a whole layer, or leave kept weights that no path from the
input to the output uses; the network then computes a constant, whatever its nominal sparsity says.
Every method's result is reported with its effective sparsity (pruned or disconnected weights,
panning.connectivity) and the layers with no effective weight left.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..connectivity import effective_masks
from ..masks import Masks


@dataclass(frozen=True)
class CollapseReport:
    """Nominal and effective sparsity of a mask, per-layer densities, and the collapsed layers."""

    sparsity: float
    effective_sparsity: float
    density: dict[str, float]
    effective_density: dict[str, float]
    collapsed: list[str]

    @property
    def collapsed_any(self) -> bool:
        return bool(self.collapsed)


def report(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape) -> CollapseReport:
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
