"""Swap a model's layers for sparse ones and back, and bridge checkpoints between the two."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from panning import adapter, checks
from panning.masks import Masks, mask_keys

from .layers import MODES, SPARSE_FOR, MaskedModule, SparseLayer


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str] | Exception:
    """The module owning the masked parameter `name` and the parameter's attribute name, if sparsify can mask it;
    else the error saying why."""
    path, _, attr = name.rpartition(".")
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
    maskable = module.MASKED if isinstance(module, SparseLayer) else \
        adapter.parameter_names(module) if adapter.with_embeddings(path, module) else ()
    if attr not in maskable:
        return ValueError(f"masks: {name!r} is not a prunable parameter of {path or 'the model'} "
                          f"({type(module).__name__}); sparsify masks {list(maskable) or 'none of its parameters'}")
    return module, attr


def _owners(model: nn.Module, masks: Masks) -> dict[str, tuple[nn.Module, str]]:
    """The module owning each masked parameter and the parameter's attribute name, every one checked before
    anything changes."""
    owners = {}
    for name in masks:
        owner = _owner(model, name)
        if isinstance(owner, Exception):
            raise owner
        owners[name] = owner
    masks.check(model)  # shapes, tied parameters
    return owners


def layer_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> tuple[Masks, Masks]:
    """Split valid `masks` of `model` into those the sparse layers of panning.nn hold (weights of exactly
    nn.Linear, nn.Conv1d, nn.Conv2d or of sparse layers; `sparsify` swaps the layer in place, and the layer is not
    `model` itself) and the rest (other parameters, other module types, hooked layers)."""
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    owners = {name: _owner(model, name) for name in masks if name != "weight"}
    held = {name for name, owner in owners.items() if not isinstance(owner, Exception) and owner[1] == "weight"
            and (isinstance(owner[0], SparseLayer) or type(owner[0]) in SPARSE_FOR)}
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

    masks: parameter name -> bool tensor (a `panning.Masks` or a plain mapping), covering prunable parameters
    (panning.adapter: layer weights, attention projections, Conv1D, embeddings; a tied one by any of its names).
    Exactly nn.Linear, nn.Conv1d and nn.Conv2d become the sparse layers of panning.nn (SparseLinear, ...), which
    share the old layers' Parameter objects; every other module (subclasses, Conv3d, nn.MultiheadAttention,
    Hugging Face's Conv1D) stays itself and becomes a `MaskedModule` of a subclass of its own class. Either
    bakes the mask into the weight (zeros behind it). Layers that are already sparse just take the new mask
    (`mode` and `scores` apply to the layers this call creates). mode: the path of the new sparse layers ("auto":
    per layer, from the cost model of panning.nn.cost; "masked"; "compressed", where a compressed op can run the
    layer). scores=True prepares mask search: each
    new layer gets trainable scores (initialized to |weight|) and keeps its weights behind the mask.

    Everything is validated before anything changes: on an error the model is untouched. Sparsify before
    wrapping in DistributedDataParallel or torch.compile. Forward and backward hooks on a swapped layer are
    refused rather than silently dropped. The return value is `model` itself unless `model` is a single layer.
    """
    checks.instance("model", model, nn.Module, "an nn.Module")  # else _owner would blame the masks
    checks.choice("mode", mode, MODES)
    checks.instance("scores", scores, bool, "a bool")
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    owners = _owners(model, masks)
    new, existing, in_place = {}, [], {}
    for name, (module, attr) in owners.items():
        if isinstance(module, SparseLayer):
            existing.append((module, masks[name], attr))
        elif type(module) in SPARSE_FOR:
            new[module] = SPARSE_FOR[type(module)].from_dense(module, masks[name], scores=scores, mode=mode)
        else:
            in_place.setdefault(module, {})[attr] = masks[name]
    for module, mask, attr in existing:
        module.set_mask(mask, attr)
    for module, module_masks in in_place.items():
        MaskedModule.wrap(module, module_masks, scores=scores)
    return _replace(model, new)


def densify(model: nn.Module, layers: Iterable[SparseLayer] | None = None) -> nn.Module:
    """Swap every sparse layer (or only those in `layers`) back for its plain torch layer, in place, with zeros
    baked into the weight; returns the model (the new layer itself if `model` was a single sparse layer)."""
    chosen = None if layers is None else set(layers)
    return _replace(model, {module: module.to_dense() for module in model.modules()
                            if isinstance(module, SparseLayer) and (chosen is None or module in chosen)})


def dense_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A sparsified model's checkpoint as a plain model's: masks baked into the weights, `mask` and `scores`
    entries dropped. `plain_model.load_state_dict(dense_state_dict(ckpt))` then loads strictly."""
    keys = mask_keys(state_dict)
    dropped = {key for mask in keys.values() for key in (mask, mask[:-len("mask")] + "scores")}
    dense = {key: value for key, value in state_dict.items() if key not in dropped}
    for weight, mask in keys.items():
        dense[weight] = state_dict[weight].masked_fill(~state_dict[mask].to(state_dict[weight].device), 0)
    return dense
