"""Save a built model with what is needed to rebuild it, and load it back, as safetensors (no code runs on
load). This is how a trained network travels from ``panning train --save`` to pruning, jackpot search or
``panning evaluate``. :func:`load_weights` reads pre-trained weights into a model that is already built."""
from __future__ import annotations

import json
import os

from safetensors.torch import save_file
from torch import nn

from ..io import atomic_path, load_tensors, tensor_metadata

#: The format marker of a model file (the key "format" of its metadata; files written before it was added have
#: none and are read as this format).
FORMAT = "panning.model/1"


def save(path, model: nn.Module, *, name: str, input_shape, num_classes: int, width: float = 1.0, **info) -> None:
    """Write ``model``'s state dict to ``path`` (atomically) with the arguments of :func:`panning.models.build`
    (and any JSON-serializable ``info``, e.g. the data set, seed and test accuracy) in the file's metadata."""
    spec = dict(name=name, input_shape=list(input_shape), num_classes=num_classes, width=width, **info)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, os.fspath(tmp), metadata={"format": FORMAT, "panning.model": json.dumps(spec)})


def read_spec(path, name: str = "path") -> dict:
    """The build arguments and saved ``info`` of a model file written by :func:`save`, without loading it."""
    metadata = tensor_metadata(path)
    kind = metadata.get("format", FORMAT)
    if kind != FORMAT or "panning.model" not in metadata:
        why = f": it is a {kind!r} file, not {FORMAT}" if kind != FORMAT else " (panning train --save)"
        raise ValueError(f"{name}: {os.fspath(path)!r} is not a model saved by panning.models.save{why}")
    return json.loads(metadata["panning.model"])


def load(path, device="cpu", name: str = "path") -> tuple[nn.Module, dict]:
    """Rebuild the model saved by :func:`save` at ``path``; returns ``(model, spec)`` where ``spec`` holds
    the build arguments and the saved ``info``."""
    from . import build  # the registry lives in the package's __init__, which imports this module

    spec = read_spec(path, name)
    model = build(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], width=spec["width"])
    return load_weights(model, path, name=name).to(device), spec


def load_weights(model: nn.Module, path, name: str = "checkpoint") -> nn.Module:
    """Load pre-trained weights into ``model``: a state dict (torch file or safetensors) or a panning training
    checkpoint (a dict with a "model" state dict). Never executes code from the file; every unreadable or
    misfitting file raises a ValueError starting with ``name``."""
    state = load_tensors(path, name=name)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError):  # TypeError: no mapping at all
        differences = (state_differences(model.state_dict(), state) if isinstance(state, dict) else
                       f"it holds a {type(state).__name__}, not a state dict")
        raise ValueError(f"{name}: {os.fspath(path)!r} does not fit the model{_holds(path)}: {differences}") from None
    return model


def _holds(path) -> str:
    """", it holds cnn2d x1 for digits" where the file is a model saved by :func:`save` (its metadata says)."""
    try:
        spec = read_spec(path)
    except (ValueError, json.JSONDecodeError):
        return ""
    data = f" for {spec['data']}" if spec.get("data") else ""
    return f" (it holds {spec.get('name')} x{spec.get('width', 1.0):g}{data})"


def state_differences(expected: dict, given: dict) -> str:
    """How a state dict differs from the model's, in one short phrase ("" where it fits: the same keys and
    shapes); torch's own message lists every key."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    shapes = [f"{key} {tuple(given[key].shape)} for {tuple(expected[key].shape)}" for key in expected
              if key in given and hasattr(given[key], "shape") and given[key].shape != expected[key].shape]
    parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
             f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
             f"{len(shapes)} of other shapes (e.g. {shapes[0]})" if shapes else ""]
    return "tensors: " + ", ".join(part for part in parts if part) if any(parts) else ""
