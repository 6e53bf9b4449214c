"""Model zoo for pruning experiments, built by name with :func:`build`.

All prunable weights live in plain ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` modules (BatchNorm is
``nn.BatchNorm2d``), which is how the pruning code finds them. ``width`` scales every hidden layer / channel
count, so tests can use narrow variants of the CIFAR networks (e.g. ``width=0.125``). :func:`save` and
:func:`load` store a model with its build arguments (safetensors).

========= ================================================================= =============
name      model                                                             input_shape
========= ================================================================= =============
mlp       2 hidden layers of 100 (MNIST-1D baseline)                        any
cnn1d     MNIST-1D authors' 1-D CNN (3 conv layers of 25 channels)          (C, L)
cnn2d     small 2-D CNN for 8x8 digits                                      (C, H, W)
vgg19_bn  VGG-19 with BatchNorm for CIFAR (GraSP / SynFlow variant)         (C, H, W)
resnet32  CIFAR ResNet-32, widths 32/64/128 ("ResNet-32 (x2)")              (C, H, W)
========= ================================================================= =============
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .. import checks
from .cnn import CNN1d, CNN2d
from .common import check_input_shape, kaiming_init
from .io import load, load_weights, read_spec, save
from .mlp import MLP
from .resnet import ResNet
from .vgg import VGG

# name -> (input dims it requires, or None for any; constructor(input_shape, num_classes, width))
_MODELS: dict[str, tuple[int | None, Callable[..., nn.Module]]] = {
    "mlp": (None, lambda shape, classes, width: MLP(shape, classes, width=width)),
    "cnn1d": (2, lambda shape, classes, width: CNN1d(shape, classes, width=width)),
    "cnn2d": (3, lambda shape, classes, width: CNN2d(shape, classes, width=width)),
    "vgg19_bn": (3, lambda shape, classes, width: VGG(shape, classes, width=width)),
    "resnet32": (3, lambda shape, classes, width: ResNet(shape, classes, blocks=5, width=width)),
}


def available() -> tuple[str, ...]:
    """The names :func:`build` accepts."""
    return tuple(_MODELS)


def build(name: str, input_shape, num_classes: int, *, width: float = 1.0) -> nn.Module:
    """A freshly Kaiming-initialized model ``name`` for inputs of ``input_shape`` (no batch dimension).

    The initialization draws from torch's global generator: seed it (``torch.manual_seed``) for a reproducible
    model.
    """
    checks.choice("name", name, _MODELS)
    checks.positive_int("num_classes", num_classes)
    checks.positive("width", width)
    dims, make = _MODELS[name]
    return kaiming_init(make(check_input_shape(input_shape, dims, name), num_classes, width))


__all__ = ["CNN1d", "CNN2d", "MLP", "ResNet", "VGG", "available", "build", "load", "load_weights", "read_spec", "save"]
