"""Drop-in sparse layers: a plain layer's weight and bias plus a boolean `mask` buffer.

`SparseLinear`, `SparseConv1d` and `SparseConv2d` subclass `nn.Linear`, `nn.Conv1d` and `nn.Conv2d`, so code
that looks for those types (initializers, `panning.arena.Arena`, export scripts) keeps working, and their
state_dict holds the standard `weight` and `bias` plus `mask` (bool, same shape as the weight).

Two paths (`SparseLayer.path`):
- masked: the op computes with `weight * mask`; `weight` is the trained parameter and its gradient is masked
  inside the op. Used while the mask changes and always with scores.
- compressed (SparseLinear, and the convolutions where panning.ops has the compressed convolution): the layer
  trains a second parameter, `values`, holding only the kept weights (in CSR order), so the gradient, momentum
  and Adam moments are sized by the kept count and the cost of a step falls with density. `weight` then is a
  frozen mirror (requires_grad False, restored when the layer leaves the path). A convolution on this path in
  mode "auto" picks its kernel per call (sparse or dense, `_SparseConv`).

Invariants
- `weight` is what everything outside the layer reads and writes: state_dict (which never holds `values`),
  `densify`, `Arena`, `panning.Masks`. On the compressed path it equals the kept values scattered into place
  after every optimizer step (a global `torch.optim` post-step hook writes them back, O(kept)) and at every
  forward; a write into `weight` (loading a checkpoint, `Arena` sharing, any in-place edit) is noticed
  by its version counter and gathered into `values` at the next forward. When both changed, `weight` wins.
- The weight gradient is masked inside the op (`grad_W = dL/dW_eff * mask`), and without scores the weights behind
  the mask are kept at exactly zero (set when the mask is set or loaded). An optimizer step then leaves them zero:
  their gradient, momentum, Adam moments and weight decay (`wd * w`) are all zero. On the compressed path they
  have no optimizer state at all.
- A new mask on the compressed path gives `values` a new layout (same Parameter object, resized): an optimizer
  that holds state for it drops that state at its next step (a global pre-step hook), as for a new parameter.
- A `weight` substituted by `torch.func.functional_call` (the criteria evaluate a model at other weights) is
  used through the masked path, so the layer is always the function `x -> layer(x; weight * mask)`.
- With `scores` (mask search, e.g. Lottery Jackpots) the weights behind the mask are kept: the mask moves and may
  bring them back. The forward uses the mask as a straight-through stand-in for top-k(scores), so `scores`
  receives `dL/dW_eff * W`; the search loop recomputes the mask (one `panning.ops.topk_mask` over the arena) and
  writes it with `set_mask`.

Any other module with prunable parameters (panning.adapter) becomes a `MaskedModule` in place: the masked path
only, one mask (and, in search, one scores parameter) per masked parameter.

Loading a state_dict without `mask` (a dense checkpoint) keeps the layer's current mask (strict loading still
succeeds) and zeroes the loaded weights behind it; so `sparse_model.load_state_dict(dense_ckpt)` gives the dense
model pruned by the sparse model's masks.
"""
from __future__ import annotations

import weakref
from functools import cache
from typing import NamedTuple

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from panning import checks, ops
from panning.ops import checks as tensor_checks

from .cost import ConvCall, compressed_wins, sparse_conv_wins

MODES = ("auto", "masked", "compressed")


@cache
def compiled_sparse_kernel(device_type: str, op: str) -> bool:
    """Whether a compiled backend (not the plain-torch reference, whose sparse kernels are dense ones) can run
    the kernel `op` (e.g. "sparse_linear_fwd") on this device type, as `panning.ops.backends()` reports it. Fixed
    for a process."""
    return any(name != "reference" and info["available"] and device_type in info["devices"]
               and op in info["ops"] for name, info in ops.backends().items())


def check_mask(mask, weight: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A bool tensor shaped like `weight`, moved to its device; clear errors otherwise."""
    return tensor_checks.mask(name, mask, weight.shape).to(weight.device)


def _shell(cls: type[nn.Module], module: nn.Module, **options) -> nn.Module:
    """A `cls` configured like `module` but without storage (meta device), to take over module's parameters."""
    kwargs = dict(bias=module.bias is not None, device="meta", dtype=module.weight.dtype, **options)
    if isinstance(module, nn.Linear):
        return cls(module.in_features, module.out_features, **kwargs)
    return cls(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
               padding=module.padding, dilation=module.dilation, groups=module.groups,
               padding_mode=module.padding_mode, **kwargs)


def _stamp(t: torch.Tensor) -> tuple[int, int]:
    """What changes when a tensor is written in place or given other storage."""
    return t.data_ptr(), t._version


class _Layout(NamedTuple):
    """The compressed layout of a mask: CSR indices over the weight viewed as (out, -1), the flat weight index of
    every kept entry, and the mask (object and version) it was built from."""

    mask: torch.Tensor
    version: int
    crow: torch.Tensor
    col: torch.Tensor
    flat: torch.Tensor


# The layers on the compressed path, for the optimizer hooks below.
_COMPRESSED: weakref.WeakSet = weakref.WeakSet()
# optimizer -> {id(values): layout generation its state was made for}
_STATE_LAYOUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _drop_stale_state(optimizer, args, kwargs) -> None:
    """Before a step: forget optimizer state made for an earlier layout of a layer's `values` (a new mask)."""
    made_for = _STATE_LAYOUT.get(optimizer, {})
    for layer in list(_COMPRESSED):
        values = layer.values
        if values is not None and values in optimizer.state and made_for.get(id(values), layer._generation) \
                != layer._generation:
            del optimizer.state[values]


def _write_back(optimizer, args, kwargs) -> None:
    """After a step: scatter the stepped values into the weights, and remember their layouts."""
    made_for = _STATE_LAYOUT.setdefault(optimizer, {})
    for layer in list(_COMPRESSED):
        layer._sync()
        if layer.values is not None and layer.values in optimizer.state:
            made_for[id(layer.values)] = layer._generation


register_optimizer_step_pre_hook(_drop_stale_state)
register_optimizer_step_post_hook(_write_back)


def mask_name(name: str) -> str:
    """The buffer holding the mask of parameter `name`: `mask` for `weight`, else `<name>_mask`."""
    return "mask" if name == "weight" else f"{name}_mask"


def scores_name(name: str) -> str:
    """The parameter holding the search scores of parameter `name`: `scores` for `weight`, else `<name>_scores`."""
    return "scores" if name == "weight" else f"{name}_scores"


#: The attributes `SparseLayer._init_sparse` sets beside the masks, scores and values (the path's state).
_PATH_STATE = ("_mode", "_layout", "_generation", "_stamps", "_own", "_frozen_from")


class SparseLayer:
    """Mask handling and the two paths, shared by the sparse layers (a mixin in front of the plain torch layer).
    `MASKED` names the masked parameters; each has a bool buffer `mask_name(p)` and, during mask search,
    `scores_name(p)`. Only `weight` has the compressed path: a subclass says whether a compressed op can run it
    (`_compressible`) and whether auto takes it (`_cheaper`)."""

    DENSE: type[nn.Module]  # the plain layer this one replaces
    MASKED: tuple[str, ...] = ("weight",)
    mask: torch.Tensor
    scores: nn.Parameter | None
    values: nn.Parameter | None

    def _init_sparse(self, mode: str = "masked") -> None:
        for name in self.MASKED:
            self.register_buffer(mask_name(name), torch.ones_like(self._parameters[name], dtype=torch.bool))
            self.register_parameter(scores_name(name), None)
        self.register_parameter("values", None)
        self._layout: _Layout | None = None
        self._generation = 0  # bumped whenever `values` gets a new layout
        self._stamps: tuple | None = None  # (_stamp(weight), _stamp(values)) when last in sync
        self._own: tuple[nn.Parameter, ...] = ()  # on the compressed path: the weight it mirrors into
        self._frozen_from = False  # the weight's requires_grad before the compressed path froze it
        self.mode = mode  # the setter: checks it and picks the path

    @classmethod
    def from_dense(cls, module: nn.Module, mask: torch.Tensor | None = None, *, scores: bool = False,
                   **options) -> SparseLayer:
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
        layer._refresh()
        return layer

    def to_dense(self) -> nn.Module:
        """The plain layer, sharing this layer's weight and bias, with the masked-out weights zeroed and the
        weight's requires_grad as it was before the compressed path."""
        self._leave_compressed()
        self._bake(force=True)
        module = _shell(self.DENSE, self)
        module.weight, module.bias = self.weight, self.bias
        module.train(self.training)
        return module

    # -- mode and path --------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = checks.choice("mode", value, MODES)
        self._refresh()

    @property
    def path(self) -> str:
        """The path the next forward takes: "masked" or "compressed"."""
        return "compressed" if self.values is not None and self.scores is None else "masked"

    @property
    def path_detail(self) -> str:
        """The path, saying where the kernel is chosen per call (as `panning train` reports it)."""
        return self.path

    def _wants_compressed(self) -> bool:
        """Whether the mode asks for the compressed path, for the current mask, scores and device."""
        if self.mode == "masked" or self.scores is not None or self.weight.is_meta or not self._compressible():
            return False
        return self.mode == "compressed" or self._cheaper()

    def _compressible(self) -> bool:
        """Whether a compressed op can run this layer."""
        raise NotImplementedError

    def _cheaper(self) -> bool:
        """Whether "auto" takes the compressed path."""
        raise NotImplementedError

    @torch.no_grad()
    def _refresh(self) -> None:
        """Take the path the mode asks for; on the compressed path, (re)build the layout of the current mask
        and gather `values` from the weight."""
        if not self._wants_compressed():
            self._leave_compressed()
            return
        self._sync()
        layout = self._layout
        if layout is not None and self.values is not None and layout.mask is self.mask \
                and layout.version == self.mask._version and layout.flat.device == self.mask.device \
                and self._own[0] is self.weight:
            return
        sw = ops.to_sparse(self.weight.detach().reshape(self.weight.shape[0], -1),
                           self.mask.reshape(self.mask.shape[0], -1))
        flat = sw.row_indices() * sw.shape[1] + sw.col_indices
        if layout is None or not torch.equal(layout.flat, flat):
            self._generation += 1  # optimizer state of the old layout no longer fits
        self._layout = _Layout(self.mask, self.mask._version, sw.crow_indices, sw.col_indices, flat)
        if self.values is None:
            self.values = nn.Parameter(sw.values)
            self._frozen_from = self.weight.requires_grad
        else:
            self.values.data = sw.values
        self._own = (self.weight,)  # also a weight Parameter put in place (load_state_dict(assign=True))
        self.weight.requires_grad_(False)
        _COMPRESSED.add(self)
        self._stamps = (_stamp(self.weight), _stamp(self.values))

    @torch.no_grad()
    def _leave_compressed(self) -> None:
        """Back to the masked path: the values written into the weight, which trains again."""
        if self.values is None:
            return
        self._sync()
        self._own[0].requires_grad_(self._frozen_from)
        self.values, self._layout, self._stamps, self._own = None, None, None, ()
        _COMPRESSED.discard(self)

    @torch.no_grad()
    def _sync(self) -> None:
        """Make `weight` and `values` agree: gather a written weight into the values, else scatter stepped
        values into the weight (O(kept); nothing when neither changed)."""
        if self.values is None or self._layout is None:
            return
        own = self._own[0]  # not a weight that torch.func.functional_call put in its place
        weight, values = _stamp(own), _stamp(self.values)
        if (weight, values) == self._stamps:
            return
        flat = own.view(-1)
        if weight != self._stamps[0]:
            self.values.copy_(flat.index_select(0, self._layout.flat))
        else:
            flat.index_copy_(0, self._layout.flat, self.values)
        self._stamps = (_stamp(own), _stamp(self.values))

    def _current_layout(self) -> _Layout | None:
        """The layout for this forward, rebuilt if the mask was written in place with new content (an in-place
        write of the same content, e.g. DDP broadcasting buffers, costs one count and one gather)."""
        layout = self._layout
        if layout.mask is not self.mask or layout.version != self.mask._version:
            mask = self.mask
            if (layout.flat.device == mask.device and int(mask.count_nonzero()) == layout.flat.numel()
                    and bool(mask.reshape(-1)[layout.flat].all())):
                self._layout = layout._replace(mask=mask, version=mask._version)
            else:
                self._bake()
                self._refresh()
        return self._layout

    def _ready(self) -> bool:
        """Whether the layout is the current mask's and the values and the weight agree (nothing for `_prepare`
        to do): a few attribute reads, where `_prepare` costs ~20 us a call, which batch-1 inference notices."""
        layout = self._layout
        return (not torch.compiler.is_compiling() and layout.mask is self.mask
                and layout.version == self.mask._version
                and self._stamps == (_stamp(self._own[0]), _stamp(self.values)))

    @torch.compiler.disable
    def _prepare(self) -> None:
        """The layout of the current mask and values in sync with the weight, before a compressed forward."""
        _COMPRESSED.add(self)  # also a copy (copy.deepcopy) of a compressed layer
        self._current_layout()
        self._sync()

    def _baked(self) -> bool:
        """Whether the masked path may use the layer's own weight as it is: zero behind the mask (no scores) and
        no gradient to mask (none recorded for it), as in inference. It then skips W * M, which at batch 1
        cost more than the dense layer (VGG-19-BN: 0.3x dense latency)."""
        return (self.scores is None and isinstance(self.weight, nn.Parameter)
                and not (torch.is_grad_enabled() and self.weight.requires_grad))

    def _uses_compressed(self) -> bool:
        """Whether this forward runs compressed: on that path, with the layer's own weight (not one substituted
        by torch.func.functional_call)."""
        return (self.values is not None and self.scores is None and self.weight is self._own[0]
                and not torch.compiler.is_exporting())  # an exported graph cannot hold the layout's size

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
    def set_mask(self, mask: torch.Tensor, name: str = "weight") -> SparseLayer:
        """Replace the mask of parameter `name` in place (the buffer keeps its identity); zeroes the newly masked
        weights unless the layer has scores."""
        mask = check_mask(mask, self._parameters[name])
        self._sync()
        self.mask_of(name).copy_(mask)
        self._bake()
        self._refresh()
        return self

    def attach_scores(self, init: torch.Tensor | None = None, name: str = "weight") -> nn.Parameter:
        """Add a trainable scores parameter to parameter `name` for mask search (default init |weight|, the
        magnitude start of Lottery Jackpots). From now on the weights behind the mask are kept, not zeroed, and the
        path is masked."""
        self._leave_compressed()
        weight = self._parameters[name]
        source = weight.detach().abs() if init is None else init
        tensor_checks.operands(init=source, shapes={"init": weight.shape})
        scores = nn.Parameter(source.detach().to(weight.device, weight.dtype, copy=True))
        setattr(self, scores_name(name), scores)
        return scores

    def remove_scores(self) -> None:
        """End mask search: drop the scores and zero the weights behind the (now fixed) masks."""
        for name in self.MASKED:
            setattr(self, scores_name(name), None)
        self._bake()
        self._refresh()

    @torch.no_grad()
    def _bake(self, force: bool = False) -> None:
        """Zero the weights behind the mask (exactly +0.0, also where a weight was inf or NaN)."""
        self._sync()
        for name in self.MASKED:
            if force or self.scores_of(name) is None:
                self._parameters[name].masked_fill_(~self.mask_of(name), 0)
        if self._stamps is not None:  # the kept weights did not change
            self._stamps = (_stamp(self._own[0]), self._stamps[1])

    def _float_mask(self, name: str = "weight") -> torch.Tensor:
        """The mask as 0/1 in the weight's dtype; with scores, a straight-through stand-in for top-k(scores):
        its value is the mask and its gradient flows to the scores."""
        mask, scores = self.mask_of(name).to(self._parameters[name].dtype), self.scores_of(name)
        return mask if scores is None else mask + (scores - scores.detach())

    # -- checkpoints and conversions ------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self._sync()
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination.pop(prefix + "values", None)  # the weight holds them

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in self.MASKED:
            key = prefix + mask_name(name)
            if key not in state_dict:  # a dense checkpoint: keep the current mask
                state_dict[key] = self.mask_of(name)
            elif isinstance(state_dict[key], torch.Tensor) and state_dict[key].dtype != torch.bool:
                error_msgs.append(f"{key}: expected a bool mask, got {state_dict[key].dtype}")
                return
        values = self._parameters.pop("values")  # not in checkpoints: gathered from the loaded weight
        try:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)
        finally:
            self._parameters["values"] = values
        self._bake()
        self._refresh()

    def _apply(self, fn, recurse=True):
        self._sync()
        result = super()._apply(fn, recurse)
        layout = self._layout
        if layout is not None:  # weight, values and mask moved together; the indices follow (fn keeps ints)
            self._layout = _Layout(self.mask, self.mask._version, fn(layout.crow), fn(layout.col), fn(layout.flat))
            self._stamps = (_stamp(self._own[0]), _stamp(self.values))
        return result

    def extra_repr(self) -> str:
        scores = ", scores" if any(self.scores_of(name) is not None for name in self.MASKED) else ""
        return f"{super().extra_repr()}, density={self.density:.4f}{scores}, mode={self.mode}"


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
    def wrap(cls, module: nn.Module, masks: dict[str, torch.Tensor], *, scores: bool = False) -> MaskedModule:
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
        """The module as it was (its own class and attributes again), the masked-out weights zeroed."""
        self._bake(force=True)
        for name in self.MASKED:
            del self._buffers[mask_name(name)]
            del self._parameters[scores_name(name)]
        del self._parameters["values"]
        for attribute in _PATH_STATE:
            del self.__dict__[attribute]
        self.__class__ = self.BASE
        return self

    def _compressible(self) -> bool:
        return False

    def _cheaper(self) -> bool:
        return False

    def _masked(self, name: str) -> torch.Tensor:
        return self._parameters[name] * self._float_mask(name)

    def __reduce_ex__(self, protocol):
        return _new_masked, (self.BASE, self.MASKED), self.__dict__


@cache
def masked_class(base: type[nn.Module], names: tuple[str, ...]) -> type[MaskedModule]:
    """The subclass of `base` and MaskedModule that masks the parameters `names` (one per class and names)."""
    attributes = {name: property(lambda self, name=name: self._masked(name)) for name in names}
    return type(f"Sparse{base.__name__}", (MaskedModule, base),
                {"BASE": base, "DENSE": base, "MASKED": names, "__module__": __name__, **attributes})


def _new_masked(base: type[nn.Module], names: tuple[str, ...]) -> MaskedModule:
    """Unpickling and deep copies of a MaskedModule (its class is made at run time)."""
    cls = masked_class(base, names)
    return cls.__new__(cls)




class SparseLinear(SparseLayer, nn.Linear):
    """`nn.Linear` with a mask, running one of two paths (see the module docstring).

    - masked: `panning.ops.masked_linear` (y = x (W*M)^T + b without materializing W*M).
    - compressed: `panning.ops.sparse_linear` on the kept weights in CSR form, whose values are the trained
      parameter `values`. The layout (row pointers, column indices) is built once per mask.
    - auto (default): compressed when a compiled sparse kernel runs `sparse_linear` on this device, the layer
      has no scores and the cost model (`panning.nn.cost`) predicts a cheaper training step for this shape,
      density and thread count; masked otherwise. Decided when the mask, mode or scores change.

    `mode` may be changed at any time; all paths compute the same function (up to float rounding).
    """

    DENSE = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 mode: str = "auto"):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_sparse(mode)

    def _compressible(self) -> bool:
        return True

    def _cheaper(self) -> bool:
        """A compiled kernel (the reference's is a dense matmul) and a cheaper step in the cost model."""
        return (compiled_sparse_kernel(self.weight.device.type, "sparse_linear_fwd")
                and compressed_wins(self.out_features, self.in_features, int(self.mask.count_nonzero()),
                                    torch.get_num_threads(), self.weight.device.type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scores is not None:
            return ops.masked_linear(x, self.weight, self._float_mask(), self.bias, score_grad=True)
        if not self._uses_compressed():
            if self._baked():
                return nn.functional.linear(x, self.weight, self.bias)
            return ops.masked_linear(x, self.weight, self.mask, self.bias)
        if not self._ready():
            self._prepare()
        layout = self._layout
        weight = ops.SparseWeight((self.out_features, self.in_features), layout.crow, layout.col, self.values)
        return ops.sparse_linear(x, weight, self.bias)


class _SparseConv(SparseLayer):
    """The convolution of SparseConv1d and SparseConv2d, on two paths like SparseLinear's:

    - masked: convolves with weight * mask (autograd masks the weight gradient and, with scores, sends
      dL/dW_eff * W to them);
    - compressed: trains the kept values (CSR over the weight viewed as (out, in * prod(kernel))), for groups = 1
      and zero padding given as numbers, where panning.ops has the compressed op. Mode "compressed" runs every
      call on the sparse kernel, `panning.ops.sparse_conv1d` / `sparse_conv2d`.
    - auto (default): the compressed path wherever a compiled kernel runs the compressed convolution on this
      device (masked elsewhere), and each call runs the kernel the cost model (`panning.nn.cost.sparse_conv_wins`)
      predicts cheaper for the call's shape: the sparse kernel, or torch's dense convolution on the weight. A call
      that trains the values (grad enabled) convolves with the weight rebuilt from them (their gradient is the
      dense weight gradient at the kept positions); any other call (torch.no_grad, frozen values) convolves with
      the mirror `weight` itself, which is zero behind the mask, without a copy. Training calls at CIFAR shapes
      take the sparse kernel and batch-1 inference the dense one (docs/results.md); both compute the same
      function, so train() and eval() differ only as the layers around them do.
    """

    OP: str  # the compressed op's name in panning.ops

    def __init__(self, *args, mode: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_sparse(mode)
        self._kernels: dict[tuple, bool] = {}  # the cost model's choices by call (see _sparse_call)

    def _compressible(self) -> bool:
        return (hasattr(ops, self.OP) and self.groups == 1 and self.padding_mode == "zeros"
                and not isinstance(self.padding, str))

    def _cheaper(self) -> bool:
        """A compiled kernel for the compressed convolution: each call then picks its kernel (`_sparse_call`)."""
        return compiled_sparse_kernel(self.weight.device.type, "sparse_conv_fwd")

    @property
    def path_detail(self) -> str:
        return "compressed (kernel per call)" if self.path == "compressed" and self.mode == "auto" else self.path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._uses_compressed():
            return self._conv_forward(x, self.weight if self._baked() else self.weight * self._float_mask(),
                                      self.bias)
        if not self._ready():
            self._prepare()
        training = torch.is_grad_enabled() and self.values.requires_grad
        return self._run(x, "sparse" if self.mode == "compressed" or self._sparse_call(x, training) else "dense")

    def _sparse_call(self, x: torch.Tensor, training: bool) -> bool:
        """Whether the cost model predicts the sparse kernel cheaper than the dense one for this call; remembered
        per input shape, thread count and layout (at most 64 calls)."""
        if torch.compiler.is_compiling():
            return self._predict(x, training)
        key = (x.shape, x.device.type, training, torch.get_num_threads(), self._generation)
        choice = self._kernels.get(key)
        if choice is None:
            if len(self._kernels) >= 64:
                self._kernels.clear()
            choice = self._kernels[key] = self._predict(x, training)
        return choice

    def _predict(self, x: torch.Tensor, training: bool) -> bool:
        """The cost model's choice for this call (`_sparse_call`)."""
        call = ConvCall.of(x.shape[0], tuple(x.shape[1:]), self.out_channels, self.kernel_size, self.stride,
                           self.padding, self.dilation, self.values.numel(), x.dtype)
        return sparse_conv_wins(call, torch.get_num_threads(), training, self.weight.device.type)

    def _run(self, x: torch.Tensor, kernel: str) -> torch.Tensor:
        """One call on the compressed path (after `_prepare`) on `kernel`: "sparse" or "dense"."""
        if kernel == "sparse":
            layout = self._layout
            weight = ops.SparseWeight((self.out_channels, self.weight[0].numel()), layout.crow, layout.col,
                                      self.values)
            return getattr(ops, self.OP)(x, weight, self.bias, kernel_size=self.kernel_size, stride=self.stride,
                                         padding=self.padding, dilation=self.dilation)
        weight = self.weight  # the mirror: the kept values in place, zero behind the mask
        if torch.is_grad_enabled() and self.values.requires_grad:
            weight = weight.view(-1).index_put((self._layout.flat,), self.values).view_as(weight)
        return self._conv_forward(x, weight, self.bias)


class SparseConv1d(_SparseConv, nn.Conv1d):
    """`nn.Conv1d` with a mask (see `_SparseConv`)."""

    DENSE = nn.Conv1d
    OP = "sparse_conv1d"


class SparseConv2d(_SparseConv, nn.Conv2d):
    """`nn.Conv2d` with a mask (see `_SparseConv`)."""

    DENSE = nn.Conv2d
    OP = "sparse_conv2d"


SPARSE_FOR: dict[type[nn.Module], type[SparseLayer]] = {
    nn.Linear: SparseLinear, nn.Conv1d: SparseConv1d, nn.Conv2d: SparseConv2d}
