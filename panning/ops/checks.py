"""Checks of tensor arguments, shared by the ops, the sparse layers, the arena and the criteria: one function per
kind, every error naming the offending argument. Scalar and type checks are in `panning.checks`."""
from __future__ import annotations

from collections.abc import Mapping

import torch


def tensor(name: str, value, *, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if dims is not None and value.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name}: expected a {want} tensor, got shape {tuple(value.shape)}")
    return value


def kind(name: str, value: torch.Tensor, *, floating: bool = True, boolean: bool = False) -> torch.Tensor:
    """A tensor of a floating-point dtype (where `floating`) or bool (where `boolean`)."""
    if not ((floating and value.dtype.is_floating_point) or (boolean and value.dtype == torch.bool)):
        kinds = " or ".join(k for k, wanted in (("bool", boolean), ("floating-point", floating)) if wanted)
        raise TypeError(f"{name}: expected a {kinds} tensor, got {value.dtype}")
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


def finite(name: str, value: torch.Tensor, *, infinite: bool = False) -> None:
    """No NaN (nor inf, unless `infinite`) in a floating tensor."""
    if value.is_floating_point() and not bool((~torch.isnan(value) if infinite else torch.isfinite(value)).all()):
        raise ValueError(f"{name}: contains NaN{'' if infinite else ' or inf'}")


def operands(*, dims: Mapping[str, tuple[int, ...]] | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None,
             one_dtype: bool = True, same_shape: bool = False, **named: torch.Tensor | None) -> None:
    """The tensor operands of one op, checked together, each error naming its operand: each of `named` a
    torch.Tensor (None: an optional operand left out) with the dimensions `dims` names for it; the first
    floating-point and every other of its dtype (`one_dtype=False`: each floating-point), of the shape `shapes`
    names (`same_shape`: of the first's shape), and on the first's device."""
    first_name = first = None
    for name, value in named.items():  # the conditions inline, the helpers only to raise: ops call this per step
        if value is None:
            continue
        wanted = dims.get(name) if dims else None
        if not isinstance(value, torch.Tensor) or (wanted is not None and value.dim() not in wanted):
            tensor(name, value, dims=wanted)
        if first is None:
            first_name, first = name, value
        if one_dtype and value is not first:
            if value.dtype != first.dtype:
                same_dtype(first_name, first, **{name: value})
        elif not value.dtype.is_floating_point:
            kind(name, value)
        expected = first.shape if same_shape else shapes.get(name) if shapes else None
        if expected is not None and value.shape != expected:
            shape(name, value, expected)
        if value.device != first.device:
            same_device(first_name, first, **{name: value})


def mask(name: str, value, expected: tuple[int, ...], *, on: tuple[str, torch.Tensor] | None = None,
         floating: bool = False, boolean: bool = True) -> torch.Tensor:
    """A mask of shape `expected`: a bool tensor (a fixed mask: to_sparse, the criteria, the sparse layers), with
    `floating` also a floating one (e.g. a straight-through mask; without `boolean`, only a floating one); on the
    device of `on` = (name, tensor) when given."""
    tensor(name, value)
    kind(name, value, floating=floating, boolean=boolean)
    shape(name, value, expected)
    if on is not None:
        same_device(on[0], on[1], **{name: value})
    return value


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


