"""Checks of tensor arguments, shared by the ops, the sparse layers, the arena and the criteria: one function per
kind, every error naming the offending argument. Scalar and type checks are in `panning.checks`."""
from __future__ import annotations

import torch


def tensor(name: str, value, *, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if dims is not None and value.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name}: expected a {want} tensor, got shape {tuple(value.shape)}")
    return value


def floating(name: str, value: torch.Tensor) -> torch.Tensor:
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    return value


def same_device(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, value in others.items():
        if value is not None and value.device != reference.device:
            raise ValueError(f"{name}: on {value.device}, but {reference_name} is on {reference.device}")


def same_dtype(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, value in others.items():
        if value is not None and value.dtype != reference.dtype:
            raise TypeError(f"{name}: dtype {value.dtype} does not match {reference_name}'s {reference.dtype}")


def shape(name: str, value: torch.Tensor, expected: tuple[int, ...]) -> torch.Tensor:
    if tuple(value.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(value.shape)}")
    return value


def no_nan(name: str, value: torch.Tensor) -> None:
    if value.is_floating_point() and bool(torch.isnan(value).any()):
        raise ValueError(f"{name}: contains NaN")


def finite(name: str, value: torch.Tensor) -> None:
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def bool_mask(name: str, value, expected: tuple[int, ...]) -> torch.Tensor:
    """A bool tensor of shape `expected` (a fixed mask: to_sparse, the criteria, the sparse layers)."""
    tensor(name, value)
    if value.dtype != torch.bool:
        raise TypeError(f"{name}: expected a bool tensor, got {value.dtype}")
    return shape(name, value, expected)


def zero_one(name: str, value: torch.Tensor) -> torch.Tensor:
    """A floating mask that holds only 0 and 1 (0.5 is neither kept nor pruned)."""
    bad = value[(value != 0) & (value != 1)]
    if bad.numel():
        raise ValueError(f"{name}: a floating mask must hold only 0 and 1 (or be bool), got {bad[0].item()!r}")
    return value


def materialized(name: str, module) -> None:
    """A module whose parameters hold values: none on the meta device (shapes only)."""
    if any(p.is_meta for p in module.parameters()):
        raise ValueError(f"{name}: its parameters are on the meta device (shapes without values); materialize it "
                         "first (module.to_empty(device=...), then load or initialize its weights)")


def mask(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """A mask the shape of `like`: bool, or floating 0/1 (e.g. a straight-through mask)."""
    tensor(name, value)
    if value.dtype != torch.bool and not value.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a bool or floating-point tensor, got {value.dtype}")
    shape(name, value, like.shape)
    same_device("weight", like, **{name: value})
    return value
