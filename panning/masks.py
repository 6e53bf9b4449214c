"""Masks: the result of every pruning method, a first-class object.

A `Masks` maps parameter names (as in `model.named_parameters()`) to bool tensors of the parameter's
shape: True keeps the weight. It can be measured (global, per-layer and effective sparsity), compared
(overlap), applied to a model, and saved or loaded without executing code (safetensors).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .arena import Arena


class Masks(Mapping):
    """Named per-parameter boolean masks (read-only mapping)."""

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        checked = {}
        for name, mask in masks.items():
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise TypeError(f"masks: entry {name!r} must be a bool tensor, got {got}")
            checked[name] = mask
        self._masks = checked

    # -- mapping --------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, {self.numel} weights, sparsity {self.sparsity:.4f})"

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_flat(cls, arena: Arena, flat: torch.Tensor) -> "Masks":
        """Masks from a flat bool buffer in the arena's layout (copied, so later writes do not leak in)."""
        if flat.dtype != torch.bool:
            raise TypeError(f"flat: expected a bool tensor, got {flat.dtype}")
        return cls({name: view.clone() for name, view in arena.split(flat).items()})

    @classmethod
    def ones(cls, arena: Arena) -> "Masks":
        return cls.from_flat(arena, torch.ones(arena.numel, dtype=torch.bool, device=arena.device))

    def to_flat(self, arena: Arena) -> torch.Tensor:
        return arena.flatten(self._masks)

    # -- measures -------------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return sum(m.numel() for m in self._masks.values())

    @property
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self._masks.values()))

    @property
    def sparsity(self) -> float:
        """Fraction of masked-out weights over all masked parameters."""
        return 1.0 - self.kept / self.numel if self.numel else 0.0

    def density(self) -> dict[str, float]:
        """Kept fraction of every parameter."""
        return {name: float(m.float().mean()) if m.numel() else 0.0 for name, m in self._masks.items()}

    def overlap(self, other: Mapping[str, torch.Tensor]) -> float:
        """Intersection over union of the kept weights of two masks over the same parameters."""
        if set(other) != set(self._masks):
            raise ValueError("other: masks cover different parameters")
        inter = union = 0
        for name, mask in self._masks.items():
            theirs = other[name].to(mask.device)
            if theirs.shape != mask.shape:
                raise ValueError(f"other: {name} has shape {tuple(theirs.shape)}, expected {tuple(mask.shape)}")
            inter += int((mask & theirs).sum())
            union += int((mask | theirs).sum())
        return inter / union if union else 1.0

    # -- model ----------------------------------------------------------------------------------
    def check(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters these masks cover; raises (leaving the model untouched) on any mismatch."""
        params = dict(model.named_parameters())
        unknown = [name for name in self._masks if name not in params]
        if unknown:
            raise ValueError(f"masks: no parameter named {unknown} in the model")
        for name, mask in self._masks.items():
            if mask.shape != params[name].shape:
                raise ValueError(f"masks: {name} has shape {tuple(mask.shape)}, parameter has "
                                 f"{tuple(params[name].shape)}")
        return {name: params[name] for name in self._masks}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the masked-out weights of `model` in place."""
        for name, param in self.check(model).items():
            param.mul_(self._masks[name].to(param.device))
        return model

    def to(self, device: torch.device | str) -> "Masks":
        return Masks({name: m.to(device) for name, m in self._masks.items()})

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the masks as safetensors (atomically: a crash never leaves half a file)."""
        tmp = f"{os.fspath(path)}.tmp"
        save_file({name: m.contiguous().cpu() for name, m in self._masks.items()}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "Masks":
        return cls(load_file(os.fspath(path), device=str(device)))
