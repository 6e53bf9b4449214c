"""Swap a model's layers for sparse ones and back, and bridge checkpoints between the two."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from panning import checks
from panning.masks import Masks, mask_keys

from .layers import MODES, SPARSE_FOR, SparseLayer


def _owner(model: nn.Module, name: str) -> nn.Module | Exception:
    """The module whose weight `name` is, if sparsify can make it a sparse layer; else the error saying why."""
    path, _, attr = name.rpartition(".")
    if attr != "weight":
        return ValueError(f"masks: {name!r} is not a layer weight; sparsify masks the `weight` of layers only")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return ValueError(f"masks: {name!r} names no module of the model")
    where = f"masks: {name!r} belongs to {path or 'the model'} ({type(module).__name__}), which"
    if parametrize.is_parametrized(module):
        return ValueError(f"{where} is parametrized (torch.nn.utils.parametrize); remove the parametrization first")
    if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks:
        return ValueError(f"{where} carries hooks (torch.nn.utils.prune uses one; call prune.remove); "
                          "sparsify replaces the module and would drop them")
    if not isinstance(module, SparseLayer) and type(module) not in SPARSE_FOR:
        supported = ", ".join(t.__name__ for t in SPARSE_FOR)
        return TypeError(f"{where} is not supported; sparsify swaps exactly {supported} (subclasses may "
                         "compute something else with the weight)")
    return module


def _owners(model: nn.Module, masks: Masks) -> dict[str, nn.Module]:
    """The module owning each masked weight, every one checked before anything changes."""
    owners = {}
    for name in masks:
        owner = _owner(model, name)
        if isinstance(owner, Exception):
            raise owner
        owners[name] = owner
    masks.check(model)  # shapes
    return owners


def layer_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> tuple[Masks, Masks]:
    """Split valid `masks` of `model` into those its sparse layers can hold (`sparsify` swaps the layer in place,
    and the layer is not `model` itself) and the rest (other parameters, other layer types, hooked layers)."""
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    held = {name for name in masks if name != "weight" and not isinstance(_owner(model, name), Exception)}
    return (Masks({n: m for n, m in masks.items() if n in held}),
            Masks({n: m for n, m in masks.items() if n not in held}))


def _replace(model: nn.Module, new: Mapping[nn.Module, nn.Module]) -> nn.Module:
    """Put new[m] wherever module m sits (also where one module is shared by several parents)."""
    slots = [name.rpartition(".") for name, module in model.named_modules(remove_duplicate=False)
             if name and module in new]
    for parent, _, child in slots:
        owner = model.get_submodule(parent)
        if getattr(owner, child) in new:  # a shared parent lists the same slot twice
            setattr(owner, child, new[getattr(owner, child)])
    return new.get(model, model)


def sparsify(model: nn.Module, masks: Mapping[str, torch.Tensor], *, mode: str = "auto",
             scores: bool = False) -> nn.Module:
    """Swap the layers that `masks` cover for sparse layers, in place; returns the model.

    masks: parameter name -> bool tensor (a `panning.Masks` or a plain mapping), covering `weight`s of
    nn.Linear, nn.Conv1d and nn.Conv2d. The new layers share the old layers' Parameter objects and bake the mask
    into the weight (zeros behind it). Layers that are already sparse just take the new mask (`mode` and
    `scores` apply to the layers this call creates). mode: the path of the new layers ("auto": per layer, from
    the cost model of panning.nn.cost; "masked"; "compressed", where a compressed op can run the layer).
    scores=True prepares mask search: each
    new layer gets trainable scores (initialized to |weight|) and keeps its weights behind the mask.

    Everything is validated before anything changes: on an error the model is untouched. Sparsify before
    wrapping in DistributedDataParallel or torch.compile. Forward and backward hooks on a swapped layer are
    refused rather than silently dropped. The return value is `model` itself unless `model` is a single layer.
    """
    checks.instance("model", model, nn.Module, "an nn.Module")
    checks.choice("mode", mode, MODES)
    checks.instance("scores", scores, bool, "a bool")
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    owners = _owners(model, masks)
    new, existing = {}, []
    for name, module in owners.items():
        if isinstance(module, SparseLayer):
            existing.append((module, masks[name]))
            continue
        new[module] = SPARSE_FOR[type(module)].from_dense(module, masks[name], scores=scores, mode=mode)
    for module, mask in existing:
        module.set_mask(mask)
    return _replace(model, new)


def densify(model: nn.Module, layers: Iterable[SparseLayer] | None = None) -> nn.Module:
    """Swap every sparse layer (or only those in `layers`) back for its plain torch layer, in place, with zeros
    baked into the weight; returns the model (the new layer itself if `model` was a single sparse layer)."""
    checks.instance("model", model, nn.Module, "an nn.Module")
    chosen = None if layers is None else set(layers)
    return _replace(model, {module: module.to_dense() for module in model.modules()
                            if isinstance(module, SparseLayer) and (chosen is None or module in chosen)})


def dense_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A sparsified model's checkpoint as a plain model's: masks baked into the weights, `mask` and `scores`
    entries dropped. `plain_model.load_state_dict(dense_state_dict(ckpt))` then loads strictly."""
    checks.instance("state_dict", state_dict, Mapping, "a mapping")
    keys = mask_keys(state_dict)
    dropped = {key for mask in keys.values() for key in (mask, mask[:-len("mask")] + "scores")}
    dense = {key: value for key, value in state_dict.items() if key not in dropped}
    for weight, mask in keys.items():
        dense[weight] = state_dict[weight].masked_fill(~state_dict[mask].to(state_dict[weight].device), 0)
    return dense
