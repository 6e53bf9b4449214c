"""Argument checks shared by the criteria: every error names the offending argument."""
from __future__ import annotations

import math

import torch
from torch import nn

from panning.ops import checks as tensor_checks

from .. import adapter, checks
from ..arena import Arena


def model_and_arena(model, arena: Arena) -> None:
    """`arena` lays out some of the parameters of `model` (same names and shapes): an arena of another model would
    score weights the model does not run."""
    params = adapter.aliases(model)
    for name, shape in zip(arena.names, arena.shapes):
        if name not in params or tuple(params[name].shape) != shape:
            raise ValueError(f"arena: parameter {name!r} of shape {shape} is not in the model; build the arena "
                             f"from this model")


def batch(value, arena: Arena) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-empty (inputs, labels) pair on the arena's device: floating-point (or integer token id) inputs and as
    many 1-D int64 labels. A pair of anything but two tensors fails where it is unpacked or read."""
    x, y = value
    if (x.dtype == torch.bool or x.is_complex() or y.dtype != torch.int64 or y.dim() != 1 or y.numel() == 0
            or x.shape[0] != y.shape[0] or x.device != arena.device or y.device != arena.device):
        raise ValueError(f"batch: expected floating-point (or integer token id) inputs and as many (at least one) "
                         f"1-D int64 labels on the model's device {arena.device}; got inputs {x.dtype} "
                         f"{tuple(x.shape)} on {x.device}, labels {y.dtype} {tuple(y.shape)} on {y.device}")
    return x, y


def mask(value, arena: Arena, name: str = "mask") -> torch.Tensor:
    """A flat bool mask in the arena's layout."""
    tensor_checks.mask(name, value, (arena.numel,), on=("arena", arena.weights))
    return value


def criterion(model, arena: Arena, *, dense: bool = True, **given) -> dict:
    """The arguments of one public criterion of `model` over `arena`, checked together, each error naming its
    argument: `arena` (model_and_arena), and those of `given` the criterion takes: `batch`, `mask` (None: the dense
    network, unless `dense` is False), `input_shape`, `temperature` (positive). Returns `given` checked (a batch as
    a tuple, a shape as a tuple of ints, a temperature as a float)."""
    model_and_arena(model, arena)
    if "batch" in given:
        given["batch"] = batch(given["batch"], arena)
    if given.get("mask") is not None or not dense:
        mask(given.get("mask"), arena)
    if "input_shape" in given:
        given["input_shape"] = input_shape(given["input_shape"])
    if "temperature" in given:
        given["temperature"] = checks.positive("temperature", given["temperature"])
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
    if isinstance(first, nn.Linear):
        fits = first.in_features in (math.prod(shape), shape[-1])
        takes = f"{first.in_features} features"
    else:
        dims = first.weight.dim() - 2
        fits = len(shape) == dims + 1 and shape[0] == first.in_channels
        takes = f"{first.in_channels} channel(s) of {dims}-D samples"
    if classes is not None and isinstance(last, nn.Linear) and last.out_features < classes:
        misfit = f"{classes} classes, but the model's last layer (Linear) gives {last.out_features} outputs"
    elif not fits:
        misfit = (f"samples of shape {tuple(shape)} do not fit the model, whose first layer ({type(first).__name__}) "
                  f"takes {takes}")
    else:
        return
    raise ValueError(f"{name}: {misfit}")


def input_shape(value) -> tuple[int, ...]:
    """A non-empty tuple of positive ints (one sample's shape, without the batch dimension)."""
    try:
        shape = tuple(int(d) for d in value)
    except TypeError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape: expected a non-empty sequence of positive ints, got {value!r}")
    return shape
