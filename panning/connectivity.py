"""Effective sparsity and layer collapse: which kept weights still connect the input to the output.

At extreme sparsity a method can prune a whole layer, or leave kept weights that no path from the input to
the output uses; the network then computes a constant, whatever its nominal sparsity says. A kept weight with
no path from input to output is as good as pruned, so every method's result is reported with its effective
sparsity (pruned or disconnected weights) and the layers with no effective weight left (:func:`collapse_report`).

A weight lies on such a path iff it receives a nonzero gradient when the network computes the number of
input-output paths: weights replaced by their 0/1 masks (float64), biases zeroed, every normalization layer
(BatchNorm, LayerNorm, GroupNorm, RMSNorm, and look-alikes by class name) made the identity, max-pooling
replaced by average pooling (so no path is hidden behind another), and the data-free all-ones input of
panning.adapter (token models: every embedding outputs the sum of its rows). The output of every prunable layer
is rescaled by an exact power of two to a peak in [2^-21, 2^-20): the counts do not overflow, and every activation
works near zero, where none saturates (Hardsigmoid, sigmoid, GELU keep a nonzero derivative). Attention's
softmax, which saturates at any scale, is replaced by relu (scores are path counts, >= 0; masked scores, -inf or
the dtype's lowest, give 0), in `F.softmax` and in `F.scaled_dot_product_attention` alike: the attention output
is then a sum of products of path counts, nonzero exactly where a query, key and value path exists;
nn.MultiheadAttention, whose functional forward hides its attention from such a replacement, computes the same
through its own weights.
"""
from __future__ import annotations

import copy
import types
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from . import adapter
from .masks import Masks

_AVG_FOR_MAX = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE_AVG_FOR_MAX = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                         nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}
#: The peak of every prunable layer's output in the path network: 2^(SCALE - 1) to 2^SCALE (module doc).
SCALE = -20
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)


def _is_norm(module: nn.Module) -> bool:
    """A normalization layer: torch's, or one of another library named like one (T5LayerNorm, LlamaRMSNorm)."""
    return isinstance(module, _NORMS) or type(module).__name__.endswith(("Norm", "Norm1d", "Norm2d", "Norm3d"))


def _path_network(model: nn.Module, masks: Masks) -> nn.Module:
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            else:  # unmasked weights (dense layers) pass every path through
                param.fill_(1.0)
        params = adapter.aliases(net)
        for name, mask in masks.items():
            params[name].copy_(mask.to(params[name].device, torch.float64))
    _make_path_counting(net)
    return net


def _make_path_counting(module: nn.Module) -> None:
    """Replace normalization layers by the identity and max- by average pooling, recursively."""
    for name, child in module.named_children():
        if _is_norm(child):
            setattr(module, name, nn.Identity())
        elif isinstance(child, nn.MultiheadAttention):
            child.forward = types.MethodType(_attention_paths, child)
        elif type(child) in _AVG_FOR_MAX:
            avg = _AVG_FOR_MAX[type(child)]
            setattr(module, name, avg(child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode))
        elif type(child) in _ADAPTIVE_AVG_FOR_MAX:
            setattr(module, name, _ADAPTIVE_AVG_FOR_MAX[type(child)](child.output_size))
        else:
            _make_path_counting(child)


class _LinearAttention(TorchFunctionMode):
    """softmax -> relu, and scaled dot-product attention with it (module docstring)."""

    SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SOFTMAX:
            return torch.relu(args[0])
        if func is F.scaled_dot_product_attention:
            return _attention(*args, **kwargs)
        return func(*args, **kwargs)


def _attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], -3)
        value = value.repeat_interleave(query.shape[-3] // value.shape[-3], -3)
    scores = query @ key.transpose(-2, -1)
    if is_causal:
        scores = scores.tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, 0) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.relu(scores) @ value


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    return ~mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def _attention_paths(self: nn.MultiheadAttention, query, key, value, key_padding_mask=None, need_weights=True,
                     attn_mask=None, average_attn_weights=True, is_causal=False):
    """nn.MultiheadAttention's forward with the attention of `_attention` (no attention weights returned)."""
    if not self.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    if self.in_proj_weight is not None:
        weights = self.in_proj_weight.chunk(3)
    else:
        weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
    heads = [F.linear(t, w).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
             for t, w in zip((query, key, value), weights)]
    keep = None  # True where a query may attend a key; nn.MultiheadAttention's masks are True (or -inf) where not
    if attn_mask is not None:  # (L, S) or (N * heads, L, S)
        keep = _allowed(attn_mask)
        keep = keep if keep.dim() == 2 else keep.view(-1, self.num_heads, *keep.shape[-2:])
    if key_padding_mask is not None:  # (N, S)
        allowed = _allowed(key_padding_mask)[:, None, None, :]
        keep = allowed if keep is None else keep & allowed
    out = _attention(*heads, attn_mask=keep, is_causal=is_causal).transpose(1, 2).flatten(-2)
    out = self.out_proj(out)
    return (out if self.batch_first else out.transpose(0, 1)), None


def effective_masks(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: tuple[int, ...]) -> Masks:
    """The kept weights that lie on at least one input-output path. `input_shape` excludes the batch."""
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    masks.check(model)
    net = _path_network(model, masks)
    device = next(net.parameters()).device
    params = adapter.aliases(net)
    masked = {id(params[n]) for n in masks}
    for param in net.parameters():
        param.requires_grad_(id(param) in masked)
    layers = [name for name, module in net.named_modules() if adapter.prunable(name, module)]
    layers += [name.rpartition(".")[0] for name in masks]
    with adapter.rescaled_outputs(net, sorted(set(layers)), [], 0, to=SCALE), _LinearAttention(), \
            adapter.data_free(net, input_shape, torch.float64, device) as ones:
        paths = adapter.logits(net(ones)).sum()
    grads = torch.autograd.grad(paths, [params[n] for n in masks], allow_unused=True)
    return Masks({name: masks[name] & (g != 0) if g is not None else torch.zeros_like(masks[name])
                  for name, g in zip(masks, grads)})


def effective_sparsity(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: tuple[int, ...]) -> float:
    """Fraction of the masked parameters that are pruned or disconnected."""
    return effective_masks(model, masks, input_shape).sparsity


@dataclass(frozen=True)
class CollapseReport:
    """Nominal and effective sparsity of a mask, per-layer densities, and the collapsed layers (every weight
    pruned or disconnected)."""

    sparsity: float
    effective_sparsity: float
    density: dict[str, float]
    effective_density: dict[str, float]
    collapsed: list[str]

    @property
    def collapsed_any(self) -> bool:
        return bool(self.collapsed)


def collapse_report(model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape) -> CollapseReport:
    """Measure `masks` on `model` for inputs of `input_shape` (one sample, no batch dimension)."""
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    effective = effective_masks(model, masks, tuple(input_shape))
    return CollapseReport(
        sparsity=masks.sparsity,
        effective_sparsity=effective.sparsity,
        density=masks.density(),
        effective_density=effective.density(),
        collapsed=[name for name, mask in effective.items() if not bool(mask.any())],
    )
