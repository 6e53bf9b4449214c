"""Argument checks shared by the criteria: every error names the offending argument."""
from __future__ import annotations

import math

import torch
from torch import nn

from panning.ops import checks as tensor_checks

from .. import adapter, checks
from ..arena import Arena


def model_and_arena(model, arena) -> None:
    """`model` is a module and `arena` lays out some of its parameters (same names and shapes); with `model` None
    (a data-free criterion of the weights alone), `arena` is an Arena."""
    checks.instance("arena", arena, Arena, "a panning.arena.Arena")
    if model is None:
        return
    checks.instance("model", model, nn.Module, "an nn.Module")
    params = adapter.aliases(model)
    for name, shape in zip(arena.names, arena.shapes):
        if name not in params or tuple(params[name].shape) != shape:
            raise ValueError(f"arena: parameter {name!r} of shape {shape} is not in the model; build the arena "
                             f"from this model")


def batch(value, arena: Arena) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-empty (inputs, int64 labels) pair on the arena's device."""
    if not isinstance(value, (tuple, list)) or len(value) != 2 \
            or not all(isinstance(t, torch.Tensor) for t in value):
        raise TypeError("batch: expected a pair (inputs, labels) of tensors")
    x, y = value
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"batch: inputs must be floating point (or integer token ids), got {x.dtype}")
    if y.dtype != torch.int64 or y.dim() != 1:
        raise ValueError(f"batch: labels must be a 1-D int64 tensor, got {y.dtype} of shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0] or y.numel() == 0:
        raise ValueError(f"batch: expected the same positive number of inputs and labels, got "
                         f"{x.shape[0]} and {y.shape[0]}")
    if x.device != arena.device or y.device != arena.device:
        raise ValueError(f"batch: tensors must be on the model's device {arena.device}, got {x.device}/{y.device}")
    return x, y


def mask(value, arena: Arena, name: str = "mask") -> torch.Tensor:
    """A flat bool mask in the arena's layout."""
    tensor_checks.mask(name, value, (arena.numel,), on=("arena", arena.weights))
    return value


def criterion(model, arena, *, dense: bool = True, **given) -> dict:
    """The arguments of one public criterion, checked together, each error naming its argument: `model` and
    `arena` (model_and_arena), and those of `given` the criterion takes: `batch`, `mask` (None: the dense network,
    unless `dense` is False), `input_shape`, `temperature` (positive), `generator` (a torch.Generator or None).
    Returns `given` checked (a batch as a tuple, a shape as a tuple of ints, a temperature as a float)."""
    model_and_arena(model, arena)
    if "batch" in given:
        given["batch"] = batch(given["batch"], arena)
    if given.get("mask") is not None or not dense:
        mask(given.get("mask"), arena)
    if "input_shape" in given:
        given["input_shape"] = input_shape(given["input_shape"])
    if "temperature" in given:
        given["temperature"] = checks.positive("temperature", given["temperature"])
    if given.get("generator") is not None and not isinstance(given["generator"], torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(given['generator']).__name__}")
    return given


def takes_samples(model: nn.Module, shape: tuple[int, ...], name: str = "data", classes: int | None = None) -> None:
    """Samples of `shape` fit the model's first layer (a Linear takes them flattened or along their last
    dimension; a convolution takes their first dimension as channels, with its spatial dimensions after), and
    its last Linear layer gives an output for each of `classes` (when given). Token models (an Embedding takes
    the samples) and models without a Linear or convolution are not checked."""
    modules = list(model.modules())
    layers = [m for m in modules if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not layers or any(isinstance(m, nn.Embedding) for m in modules):
        return
    first, last = layers[0], layers[-1]
    if classes is not None and isinstance(last, nn.Linear) and last.out_features < classes:
        raise ValueError(f"{name}: {classes} classes, but the model's last layer (Linear) gives "
                         f"{last.out_features} outputs")
    if isinstance(first, nn.Linear):
        fits = first.in_features in (math.prod(shape), shape[-1])
        takes = f"{first.in_features} features"
    else:
        dims = first.weight.dim() - 2
        fits = len(shape) == dims + 1 and shape[0] == first.in_channels
        takes = f"{first.in_channels} channel(s) of {dims}-D samples"
    if not fits:
        raise ValueError(f"{name}: samples of shape {tuple(shape)} do not fit the model, whose first layer "
                         f"({type(first).__name__}) takes {takes}")


def input_shape(value) -> tuple[int, ...]:
    """A non-empty tuple of positive ints (one sample's shape, without the batch dimension)."""
    try:
        shape = tuple(int(d) for d in value)
    except TypeError:
        raise TypeError(f"input_shape: expected a sequence of ints, got {type(value).__name__}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape: expected positive sizes, got {tuple(value)}")
    return shape
