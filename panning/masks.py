"""Masks: the result of every pruning method, a first-class object.

A `Masks` maps parameter names (as in `model.named_parameters()`) to bool tensors of the parameter's
shape: True keeps the weight. It can be measured (global and per-layer sparsity; effective sparsity is
panning.connectivity's), compared (overlap), applied to a model, saved (atomically) or loaded without executing
code (safetensors, or torch.save files read with weights_only), and exported (baked dense weights; CSR weights).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from . import adapter, ops
from .arena import Arena
from .io import load_tensors, save_tensors, tensor_metadata

#: The format marker every masks file carries (the key MARKER of its metadata), and the key of what it was made for.
FORMAT = "panning.masks/1"
MARKER, ABOUT = "format", "about"


def mask_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """weight key -> mask key for every sparse layer (panning.nn) in a state_dict: a bool `<prefix>mask`
    beside a `<prefix>weight` of the same shape, or a bool `<key>_mask` beside a `<key>` (e.g. an attention's
    `in_proj_weight_mask`)."""
    found = {}
    for key, value in state_dict.items():
        if key == "mask" or key.endswith(".mask") or key.endswith("_mask"):
            weight_key = key[:-len("_mask")] if key.endswith("_mask") else key[:-len("mask")] + "weight"
            weight = state_dict.get(weight_key)
            if (isinstance(value, torch.Tensor) and value.dtype == torch.bool and isinstance(weight, torch.Tensor)
                    and weight.shape == value.shape):
                found[weight_key] = key
    return found


def _owner(model: nn.Module, name: str) -> nn.Module:
    """The module holding parameter `name`."""
    return model.get_submodule(name.rpartition(".")[0])


def _takes_masks(module: nn.Module, name: str) -> bool:
    """Whether `module` keeps its own mask for parameter `name` (the sparse layers of panning.nn)."""
    return name.rpartition(".")[2] in getattr(module, "MASKED", ()) and callable(getattr(module, "set_mask", None))


class Masks(Mapping):
    """Named per-parameter boolean masks (read-only mapping)."""

    def __init__(self, masks: Mapping[str, torch.Tensor], about: Mapping[str, object] | None = None):
        """`about`: what the masks were made for (model, width, data ...), as saved in and read from files. Every
        entry must be a bool tensor: a float one would prune by truthiness, silently."""
        entries = masks.items() if isinstance(masks, Mapping) else ()
        wrong = next((key for key, mask in entries if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool),
                     None)
        if not isinstance(masks, Mapping) or wrong is not None:
            got = (type(masks).__name__ if wrong is None else
                   f"entry {wrong!r} of {getattr(masks[wrong], 'dtype', type(masks[wrong]).__name__)}")
            raise TypeError(f"masks: expected a mapping of parameter names to bool tensors, got {got}")
        self.about = dict(about or {})
        self._masks = dict(masks)

    # -- mapping --------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, {self.numel} weights, sparsity {self.sparsity:.4f})"

    def __eq__(self, other: object) -> bool:
        """Same parameter names and identical masks (the Mapping default would compare tensors ambiguously)."""
        if not isinstance(other, Mapping):
            return NotImplemented
        return set(other) == set(self._masks) and all(
            isinstance(other[name], torch.Tensor) and other[name].shape == mask.shape
            and torch.equal(other[name].to(mask.device), mask) for name, mask in self._masks.items())

    __hash__ = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_flat(cls, arena: Arena, flat: torch.Tensor) -> Masks:
        """Masks from a flat bool buffer in the arena's layout (copied, so later writes do not leak in; the
        constructor refuses a buffer of another dtype)."""
        return cls({name: view.clone() for name, view in arena.split(flat).items()})

    @classmethod
    def ones(cls, arena: Arena) -> Masks:
        return cls.from_flat(arena, torch.ones(arena.numel, dtype=torch.bool, device=arena.device))

    @classmethod
    def from_model(cls, model: nn.Module) -> Masks:
        """The masks held by the sparse layers (panning.nn) of a model, copied."""
        return cls({f"{name}.{attr}" if name else attr: module.mask_of(attr).detach().clone()
                    for name, module in model.named_modules() if callable(getattr(module, "mask_of", None))
                    for attr in module.MASKED})

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> Masks:
        """The masks in a checkpoint of a sparsified model, keyed by the weights they cover."""
        return cls({weight: state_dict[mask].clone() for weight, mask in mask_keys(state_dict).items()})

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

    def layer_sparsity(self) -> dict[str, float]:
        """Pruned fraction of every parameter."""
        return {name: 1.0 - kept if self._masks[name].numel() else 0.0 for name, kept in self.density().items()}

    def overlap(self, other: Mapping[str, torch.Tensor]) -> float:
        """Intersection over union of the kept weights of two masks over the same parameters (of the same shapes:
        masks of other shapes would broadcast)."""
        if set(other) != set(self._masks) or any(other[name].shape != mask.shape for name, mask in self._masks.items()):
            raise ValueError(f"other: masks of {sorted(other)} do not cover the same parameters with the same shapes "
                             f"as these, of {sorted(self._masks)}")
        inter = union = 0
        for name, mask in self._masks.items():
            theirs = other[name].to(mask.device)
            inter += int((mask & theirs).sum())
            union += int((mask | theirs).sum())
        return inter / union if union else 1.0

    # -- model ----------------------------------------------------------------------------------
    def check(self, model: nn.Module, name: str = "masks") -> dict[str, nn.Parameter]:
        """The parameters these masks cover (by any of their names: a tied parameter answers to each); raises a
        ValueError starting with `name` (leaving the model untouched) on any mismatch, also on two masks for one
        tied parameter, and for masks that keep none of their weights (sparsity 1)."""
        params = adapter.aliases(model)
        misfit = next(self._misfits(params), None)
        if misfit is not None:
            raise ValueError(f"{name}: {misfit}")
        return {key: params[key] for key in self._masks}

    def _misfits(self, params: Mapping[str, nn.Parameter]):
        """Why these masks do not fit a model whose parameters (by any of their names) are `params`, first cause
        first: they keep nothing, a name or a shape that is not the model's, two masks for one tied parameter."""
        if self.numel and not self.kept:
            yield f"keep none of the {self.numel:,} weights they cover (sparsity 1 removes every weight)"
        for key, mask in self._masks.items():
            if key not in params:
                yield f"no parameter named {key!r} in the model"
            elif mask.shape != params[key].shape:
                yield f"{key} has shape {tuple(mask.shape)}, parameter has {tuple(params[key].shape)}"
        first: dict[int, str] = {}
        for key in self._masks:
            other = first.setdefault(id(params[key]), key)
            if other != key:
                yield f"{other!r} and {key!r} name one tied parameter; give it one mask"

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the masked-out weights of `model` in place; a sparse layer (panning.nn) takes the mask as its
        own (and keeps its weights if it searches a mask with scores). Validates everything first."""
        for name, param in self.check(model).items():
            owner = _owner(model, name)
            if _takes_masks(owner, name):
                owner.set_mask(self._masks[name], name.rpartition(".")[2])
            else:
                param.masked_fill_(~self._masks[name].to(param.device), 0)
        return model

    # -- export ---------------------------------------------------------------------------------
    @torch.no_grad()
    def baked(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Copies of the masked parameters with zeros at the pruned positions (the model is not changed)."""
        return {name: param.detach().masked_fill(~self._masks[name].to(param.device), 0)
                for name, param in self.check(model).items()}

    @torch.no_grad()
    def export(self, model: nn.Module) -> dict[str, ops.SparseWeight]:
        """The kept weights of every masked parameter in compressed (CSR) form, ready for
        `panning.ops.sparse_linear`. A convolution weight (out, in/groups, *kernel) is flattened to its
        (out, in/groups * prod(kernel)) im2col matrix."""
        exported = {}
        for name, param in self.check(model).items():
            rows = param.shape[0] if param.dim() else 1
            weight = param.detach().reshape(rows, -1)
            exported[name] = ops.to_sparse(weight, self._masks[name].to(param.device).reshape(rows, -1))
        return exported

    def to(self, device: torch.device | str) -> Masks:
        return Masks({name: m.to(device) for name, m in self._masks.items()}, self.about)

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the masks atomically (a crash never leaves half a file): a torch.save file when the name ends
        in .pt or .pth (loadable with weights_only=True), safetensors otherwise. The file carries the format
        marker FORMAT and `about` (what the masks were made for)."""
        marker = {MARKER: FORMAT, ABOUT: json.dumps(self.about)}
        tensors = {name: m.contiguous().cpu() for name, m in self._masks.items()}
        if Path(path).suffix in (".pt", ".pth"):
            save_tensors({**tensors, **marker}, path)
        else:
            save_tensors(tensors, path, metadata=marker)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu", name: str = "path") -> Masks:
        """Read masks written by `save` (either format, recognized by content); never executes code. A file of
        another format version, or holding anything but a non-empty mapping of names to bool tensors, is refused
        with a ValueError starting with `name`; one without a marker (written before panning marked its files) is
        read as masks made for an unknown model."""
        loaded = load_tensors(path, device=device, name=name)
        shown = repr(os.fspath(path))
        tensors = dict(loaded) if isinstance(loaded, Mapping) else {}
        marker = {key: tensors.pop(key) for key in (MARKER, ABOUT) if isinstance(tensors.get(key), str)}
        marker = marker or tensor_metadata(path)
        other = next((key for key, t in tensors.items() if not isinstance(t, torch.Tensor) or t.dtype != torch.bool),
                     None)
        if marker.get(MARKER, FORMAT) != FORMAT:
            misfit = f"is {marker[MARKER]!r}, not panning masks ({FORMAT})"
        elif other is not None:
            misfit = f"holds {other!r}, which is not a mask (a bool tensor)"
        elif not tensors:
            misfit = ("holds no masks" if isinstance(loaded, Mapping) else
                      f"holds a {type(loaded).__name__}, not a mapping of masks")
        else:
            return cls(tensors, json.loads(marker.get(ABOUT, "{}")))
        raise ValueError(f"{name}: {shown} {misfit}")
