"""Save a built model with what is needed to rebuild it, and load it back, as safetensors (no code runs on
load). This is how a trained network travels from ``panning train --save`` to pruning or jackpot search."""
from __future__ import annotations

import json
import os

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn


def save(path, model: nn.Module, *, name: str, input_shape, num_classes: int, width: float = 1.0, **info) -> None:
    """Write ``model``'s state dict to ``path`` with the arguments of :func:`panning.models.build` (and any JSON-
    serializable ``info``, e.g. the data set and test accuracy) in the file's metadata."""
    spec = dict(name=name, input_shape=list(input_shape), num_classes=num_classes, width=width, **info)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={"panning.model": json.dumps(spec)})


def load(path, device="cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved by :func:`save` at ``path``; returns ``(model, spec)`` where ``spec`` holds
    the build arguments and the saved ``info``."""
    from . import build  # the registry lives in the package's __init__, which imports this module

    with safe_open(os.fspath(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("panning.model")
    if raw is None:
        raise ValueError(f"path {os.fspath(path)!r} is not a model saved by panning.models.save")
    spec = json.loads(raw)
    model = build(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], width=spec["width"])
    model.load_state_dict(load_file(os.fspath(path), device="cpu"))
    return model.to(device), spec
