"""Drop-in sparse layers: a plain layer's weight and bias plus a boolean `mask` buffer.

`SparseLinear`, `SparseConv1d` and `SparseConv2d` subclass `nn.Linear`, `nn.Conv1d` and `nn.Conv2d`, so code
that looks for those types (initializers, `panning.arena.Arena`, export scripts) keeps working, and their
state_dict holds the standard `weight` and `bias` plus `mask` (bool, same shape as the weight).

Invariants
- The dense `weight` parameter is authoritative in every mode: optimizers, DDP, checkpoints and `Arena` see one
  ordinary parameter, and switching paths never rebuilds optimizer state.
- The weight gradient is masked inside the op (`grad_W = dL/dW_eff * mask`), and without scores the weights behind
  the mask are kept at exactly zero (set when the mask is set or loaded). An optimizer step then leaves them zero:
  their gradient, momentum, Adam moments and weight decay (`wd * w`) are all zero.
- With `scores` (mask search, e.g. Lottery Jackpots) the weights behind the mask are kept: the mask moves and may
  bring them back. The forward uses the mask as a straight-through stand-in for top-k(scores), so `scores`
  receives `dL/dW_eff * W`; the search loop recomputes the mask (one `panning.ops.topk_mask` over the arena) and
  writes it with `set_mask`.

Loading a state_dict without `mask` (a dense checkpoint) keeps the layer's current mask (strict loading still
succeeds) and zeroes the loaded weights behind it; so `sparse_model.load_state_dict(dense_ckpt)` gives the dense
model pruned by the sparse model's masks.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
from torch import nn

from panning import checks, ops
from panning.ops import _checks

MODES = ("auto", "masked", "compressed")

# "auto" takes the compressed path at or below this density when a compiled sparse kernel runs the op.
# Measured (bench/bench_layers.py, 4096-wide MLP training step, cpp kernels, 1 thread): the compressed step
# costs about 120 + 2720 * density ms against 590 ms dense, so it wins up to a density of about 0.17.
AUTO_MAX_DENSITY = 0.15


@lru_cache(maxsize=None)
def compiled_sparse_kernel(device_type: str) -> bool:
    """Whether a compiled backend (not the plain-torch reference, whose sparse kernel is a dense matmul) can
    run `sparse_linear` on this device type, as `panning.ops.backends()` reports it. Fixed for a process."""
    return any(name != "reference" and info["available"] and device_type in info["devices"]
               and "sparse_linear_fwd" in info["ops"] for name, info in ops.backends().items())


def check_mask(mask, weight: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A bool tensor shaped like `weight`, moved to its device; clear errors otherwise."""
    return _checks.bool_mask(name, mask, weight.shape).to(weight.device)


def _shell(cls: type[nn.Module], module: nn.Module, **options) -> nn.Module:
    """A `cls` configured like `module` but without storage (meta device), to take over module's parameters."""
    kwargs = dict(bias=module.bias is not None, device="meta", dtype=module.weight.dtype, **options)
    if isinstance(module, nn.Linear):
        return cls(module.in_features, module.out_features, **kwargs)
    return cls(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
               padding=module.padding, dilation=module.dilation, groups=module.groups,
               padding_mode=module.padding_mode, **kwargs)


def mask_name(name: str) -> str:
    """The buffer holding the mask of parameter `name`: `mask` for `weight`, else `<name>_mask`."""
    return "mask" if name == "weight" else f"{name}_mask"


def scores_name(name: str) -> str:
    """The parameter holding the search scores of parameter `name`: `scores` for `weight`, else `<name>_scores`."""
    return "scores" if name == "weight" else f"{name}_scores"


class SparseLayer:
    """Mask handling shared by the sparse layers (a mixin in front of the plain torch layer). `MASKED` names the
    masked parameters; each has a bool buffer `mask_name(p)` and, during mask search, `scores_name(p)`."""

    DENSE: type[nn.Module]  # the plain layer this one replaces
    MASKED: tuple[str, ...] = ("weight",)
    mask: torch.Tensor
    scores: nn.Parameter | None

    def _init_sparse(self) -> None:
        for name in self.MASKED:
            self.register_buffer(mask_name(name), torch.ones_like(self._parameters[name], dtype=torch.bool))
            self.register_parameter(scores_name(name), None)

    @classmethod
    def from_dense(cls, module: nn.Module, mask: torch.Tensor | None = None, *, scores: bool = False,
                   **options) -> "SparseLayer":
        """A sparse layer that takes over `module`'s parameters (the same Parameter objects, so an optimizer
        built on them keeps working) and bakes `mask` (default: all kept) into the weight. With `scores=True`
        it gets scores for mask search instead (initialized to |weight|) and the weights are kept. `options` go
        to the constructor (e.g. `mode=` of SparseLinear)."""
        if type(module) is not cls.DENSE:
            raise TypeError(f"module: expected a {cls.DENSE.__name__}, got {type(module).__name__}")
        mask = check_mask(mask, module.weight) if mask is not None else None
        layer = _shell(cls, module, **options)
        layer.weight, layer.bias = module.weight, module.bias
        layer.mask = torch.ones_like(module.weight, dtype=torch.bool) if mask is None else mask.clone()
        layer.train(module.training)
        if scores:
            layer.attach_scores()
        layer._bake()
        return layer

    def to_dense(self) -> nn.Module:
        """The plain layer, sharing this layer's weight and bias, with the masked-out weights zeroed."""
        self._bake(force=True)
        module = _shell(self.DENSE, self)
        module.weight, module.bias = self.weight, self.bias
        module.train(self.training)
        return module

    # -- mask and scores ------------------------------------------------------------------------
    def masked_parameters(self) -> dict[str, nn.Parameter]:
        """The masked parameters by attribute name (the dense Parameters behind the masks)."""
        return {name: self._parameters[name] for name in self.MASKED}

    def mask_of(self, name: str = "weight") -> torch.Tensor:
        return getattr(self, mask_name(name))

    def scores_of(self, name: str = "weight") -> nn.Parameter | None:
        return getattr(self, scores_name(name))

    @property
    def density(self) -> float:
        """Fraction of weights kept."""
        masks = [self.mask_of(name) for name in self.MASKED]
        total = sum(m.numel() for m in masks)
        return sum(int(m.count_nonzero()) for m in masks) / total if total else 0.0

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor, name: str = "weight") -> "SparseLayer":
        """Replace the mask of parameter `name` in place (the buffer keeps its identity); zeroes the newly masked
        weights unless the layer has scores."""
        self.mask_of(name).copy_(check_mask(mask, self._parameters[name]))
        self._bake()
        return self

    def attach_scores(self, init: torch.Tensor | None = None, name: str = "weight") -> nn.Parameter:
        """Add a trainable scores parameter to parameter `name` for mask search (default init |weight|, the
        magnitude start of Lottery Jackpots). From now on the weights behind the mask are kept, not zeroed."""
        weight = self._parameters[name]
        source = weight.detach().abs() if init is None else init
        _checks.shape("init", _checks.floating("init", _checks.tensor("init", source)), weight.shape)
        scores = nn.Parameter(source.detach().to(weight.device, weight.dtype, copy=True))
        setattr(self, scores_name(name), scores)
        return scores

    def remove_scores(self) -> None:
        """End mask search: drop the scores and zero the weights behind the (now fixed) masks."""
        for name in self.MASKED:
            setattr(self, scores_name(name), None)
        self._bake()

    @torch.no_grad()
    def _bake(self, force: bool = False) -> None:
        """Zero the weights behind the mask (exactly +0.0, also where a weight was inf or NaN)."""
        for name in self.MASKED:
            if force or self.scores_of(name) is None:
                self._parameters[name].masked_fill_(~self.mask_of(name), 0)

    def _float_mask(self, name: str = "weight") -> torch.Tensor:
        """The mask as 0/1 in the weight's dtype; with scores, a straight-through stand-in for top-k(scores):
        its value is the mask and its gradient flows to the scores."""
        mask, scores = self.mask_of(name).to(self._parameters[name].dtype), self.scores_of(name)
        return mask if scores is None else mask + (scores - scores.detach())

    # -- checkpoints ----------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in self.MASKED:
            key = prefix + mask_name(name)
            if key not in state_dict:  # a dense checkpoint: keep the current mask
                state_dict[key] = self.mask_of(name)
            elif isinstance(state_dict[key], torch.Tensor) and state_dict[key].dtype != torch.bool:
                error_msgs.append(f"{key}: expected a bool mask, got {state_dict[key].dtype}")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._bake()

    def extra_repr(self) -> str:
        scores = ", scores" if any(self.scores_of(name) is not None for name in self.MASKED) else ""
        return f"{super().extra_repr()}, density={self.density:.4f}{scores}"


class MaskedModule(SparseLayer):
    """The sparse form of any other module with prunable parameters (panning.adapter): a subclass of Linear or
    Conv (timm's Linear, nn.MultiheadAttention's out_proj), Conv3d, nn.MultiheadAttention's in_proj_weight,
    Hugging Face's Conv1D, an Embedding. The module keeps its identity, its forward and its class (it becomes an
    instance of a subclass of both its class and this mixin, made once per class: `masked_class`); reading a
    masked parameter as an attribute gives weight * mask (straight-through to the scores during mask search),
    which the module's own forward then uses, while `named_parameters` and the state_dict still hold the dense
    Parameter under its name, beside `mask_name(p)`."""

    BASE: type[nn.Module]

    @classmethod
    def wrap(cls, module: nn.Module, masks: dict[str, torch.Tensor], *, scores: bool = False) -> "MaskedModule":
        """Make `module` sparse in place with `masks` (parameter name -> bool mask, checked by the caller)."""
        module.__class__ = masked_class(type(module), tuple(masks))
        module._init_sparse()
        for name, mask in masks.items():
            module.mask_of(name).copy_(mask.to(module._parameters[name].device))
            if scores:
                module.attach_scores(name=name)
        module._bake()
        return module

    def to_dense(self) -> nn.Module:
        """The module as it was (its own class again), the masked-out weights zeroed."""
        self._bake(force=True)
        for name in self.MASKED:
            del self._buffers[mask_name(name)]
            del self._parameters[scores_name(name)]
        self.__class__ = self.BASE
        return self

    def _masked(self, name: str) -> torch.Tensor:
        return self._parameters[name] * self._float_mask(name)

    def __reduce_ex__(self, protocol):
        return _new_masked, (self.BASE, self.MASKED), self.__dict__


@lru_cache(maxsize=None)
def masked_class(base: type[nn.Module], names: tuple[str, ...]) -> type[MaskedModule]:
    """The subclass of `base` and MaskedModule that masks the parameters `names` (one per class and names)."""
    attributes = {name: property(lambda self, name=name: self._masked(name)) for name in names}
    return type(f"Sparse{base.__name__}", (MaskedModule, base),
                {"BASE": base, "DENSE": base, "MASKED": names, "__module__": __name__, **attributes})


def _new_masked(base: type[nn.Module], names: tuple[str, ...]) -> MaskedModule:
    """Unpickling and deep copies of a MaskedModule (its class is made at run time)."""
    cls = masked_class(base, names)
    return cls.__new__(cls)


class _Structure(NamedTuple):
    """The compressed layout of a mask, remembered with the mask version it was built from."""

    mask: torch.Tensor
    version: int
    nnz: int
    crow: torch.Tensor | None  # None: auto found the mask too dense for the compressed path
    col: torch.Tensor | None
    flat: torch.Tensor | None  # flat weight index of every kept entry, in CSR order


class SparseLinear(SparseLayer, nn.Linear):
    """`nn.Linear` with a mask, running one of two paths.

    - masked: `panning.ops.masked_linear` (y = x (W*M)^T + b without materializing W*M). Used while the mask
      changes and always with scores.
    - compressed: `panning.ops.sparse_linear` on the kept weights in CSR form. The layout (row pointers, column
      indices) is built once per mask and rebuilt only when the mask's content changes; the values are gathered
      from the dense weight at every forward (O(kept), differentiable), so the weight stays the one parameter
      and its gradient is nonzero only at kept positions. This avoids a second copy of the parameters that
      optimizers, DDP and checkpoints would have to follow, at the price of a dense-sized weight gradient.
    - auto (default): compressed when a compiled sparse kernel runs `sparse_linear` on this device, the layer
      has no scores and density <= AUTO_MAX_DENSITY; masked otherwise (the reference sparse kernel is a dense
      matmul and never wins).

    `mode` may be changed at any time; all paths compute the same function (up to float rounding).
    """

    DENSE = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 mode: str = "auto"):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_sparse()
        self.mode = mode
        self._structure: _Structure | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = checks.choice("mode", value, MODES)

    @property
    def path(self) -> str:
        """The path the next forward takes: "masked" or "compressed"."""
        return "compressed" if self._compressed_layout() is not None else "masked"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scores is not None:
            return ops.masked_linear(x, self.weight, self._float_mask(), self.bias, score_grad=True)
        layout = self._compressed_layout()
        if layout is None:
            return ops.masked_linear(x, self.weight, self.mask, self.bias)
        crow, col, flat = layout
        values = self.weight.reshape(-1).index_select(0, flat)
        weight = ops.SparseWeight((self.out_features, self.in_features), crow, col, values)
        return ops.sparse_linear(x, weight, self.bias)

    def _compressed_layout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(crow, col, flat) when the compressed path runs, else None."""
        if self.mode == "masked" or self.scores is not None or torch.compiler.is_exporting():
            return None  # (an exported graph cannot hold the layout's data-dependent size: masked there)
        if self.mode == "auto" and not compiled_sparse_kernel(self.weight.device.type):
            return None
        return self._layout(auto=self.mode == "auto")

    @torch.compiler.disable
    def _layout(self, auto: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The compressed layout of the current mask (None when auto finds it too dense), cached. An in-place
        write of the same content (e.g. DDP broadcasting buffers) costs one count and one gather, no rebuild."""
        mask, cached = self.mask, self._structure
        if cached is None or cached.mask is not mask or cached.version != mask._version:
            nnz = int(mask.count_nonzero())
            if (cached is not None and cached.flat is not None and cached.nnz == nnz
                    and cached.flat.device == mask.device and bool(mask.reshape(-1)[cached.flat].all())):
                cached = cached._replace(mask=mask, version=mask._version)
            else:
                cached = _Structure(mask, mask._version, nnz, None, None, None)
        if auto and cached.nnz > AUTO_MAX_DENSITY * mask.numel():
            self._structure = cached
            return None
        if cached.flat is None:
            sw = ops.to_sparse(self.weight.detach(), mask)
            flat = sw.row_indices() * self.in_features + sw.col_indices
            cached = cached._replace(crow=sw.crow_indices, col=sw.col_indices, flat=flat)
        self._structure = cached
        return cached.crow, cached.col, cached.flat

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}"


class _SparseConv(SparseLayer):
    """The masked convolution of SparseConv1d and SparseConv2d: convolves with weight * mask (autograd masks the
    weight gradient and, with scores, sends dL/dW_eff * W to them). There is no compressed convolution kernel; the
    path is always masked."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_sparse()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self._float_mask(), self.bias)


class SparseConv1d(_SparseConv, nn.Conv1d):
    """`nn.Conv1d` with a mask (see `_SparseConv`)."""

    DENSE = nn.Conv1d


class SparseConv2d(_SparseConv, nn.Conv2d):
    """`nn.Conv2d` with a mask (see `_SparseConv`)."""

    DENSE = nn.Conv2d


SPARSE_FOR: dict[type[nn.Module], type[SparseLayer]] = {
    nn.Linear: SparseLinear, nn.Conv1d: SparseConv1d, nn.Conv2d: SparseConv2d}
