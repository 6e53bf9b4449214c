"""The prunable parameters of a model as views into one flat buffer.

Every pruning algorithm works on "the arena": all prunable weights laid end to end, with segment
offsets marking where each layer starts. One saliency call and one top-k call over the arena then
replace a Python loop over layers; masks, scores and gradients live in flat buffers of the same layout.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from panning.ops import checks as tensor_checks

from . import adapter, checks
from .adapter import Filter, except_last, prunable

__all__ = ["Arena", "Filter", "except_last", "prunable"]


class Arena:
    """Flat layout of the prunable weights of `model`.

    With `share=True` (default) each weight becomes a view into `self.weights`, so writes to either
    are seen by both; build the arena after moving the model to its device. The prunable parameters are
    those panning.adapter selects with `include` (a tied one once); `names` are their parameter names
    (as in `model.named_parameters(remove_duplicate=False)`); segment s spans offsets[s]:offsets[s+1].
    `logits` picks the class scores out of the model's output (default `panning.adapter.logits`).
    """

    def __init__(self, model: nn.Module, *, include: Filter = prunable, share: bool = True,
                 logits: adapter.Logits = adapter.logits):
        checks.instance("logits", logits, Callable, "a function of the model's output")
        tensor_checks.materialized("model", model)
        found = adapter.selected(model, include)
        devices, dtypes = {p.device for _, p in found}, {p.dtype for _, p in found}
        if len(devices) != 1 or len(dtypes) != 1:  # none: torch.cat would fail; several: promote or fail
            got = f"{len(found)} on {devices} of {dtypes}" if found else "none"
            raise ValueError("model: expected prunable weights (Linear, Conv, attention projections) under the given "
                             f"filter, on one device and of one dtype; got {got}")
        self.logits = logits
        self.names = [name for name, _ in found]
        self.params = [param for _, param in found]
        self.shapes = [tuple(p.shape) for p in self.params]
        sizes = torch.tensor([p.numel() for p in self.params], dtype=torch.int64)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
        self.weights = torch.cat([p.detach().reshape(-1) for p in self.params])
        if share:
            for param, view in zip(self.params, self.split(self.weights).values()):
                param.data = view

    # -- layout ---------------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return int(self.offsets[-1])

    @property
    def sizes(self) -> torch.Tensor:
        return self.offsets.diff()

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[str, nn.Parameter]]:
        return iter(zip(self.names, self.params))

    def zeros(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A new flat buffer in the arena's layout."""
        return torch.zeros(self.numel, dtype=dtype or self.weights.dtype, device=self.device)

    # -- flat <-> per parameter ----------------------------------------------------------------
    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter views (shaped like each weight) into a flat buffer of the arena's layout."""
        self._check_flat("flat", flat)
        bounds = self.offsets.tolist()
        return {name: flat[bounds[i]:bounds[i + 1]].view(shape)
                for i, (name, shape) in enumerate(zip(self.names, self.shapes))}

    def flatten(self, tensors: Mapping[str, torch.Tensor], out: torch.Tensor | None = None, *,
                name: str = "tensors") -> torch.Tensor:
        """Gather per-parameter tensors (keyed by parameter name, one of each parameter's shape) into one flat
        buffer; `name` names `tensors` in the error that lists the missing and misshapen entries."""
        wrong = {key: "missing" if key not in tensors else f"shape {tuple(tensors[key].shape)}, expected {shape}"
                 for key, shape in zip(self.names, self.shapes)
                 if key not in tensors or tuple(tensors[key].shape) != shape}
        if wrong:
            raise ValueError(f"{name}: no tensor of the parameter's shape for {wrong}")
        parts = [tensors[name].reshape(-1) for name in self.names]
        return torch.cat(parts) if out is None else torch.cat(parts, out=out)

    def _check_flat(self, name: str, flat: torch.Tensor) -> None:
        if not isinstance(flat, torch.Tensor) or flat.dim() != 1 or flat.numel() != self.numel:
            got = tuple(flat.shape) if isinstance(flat, torch.Tensor) else type(flat).__name__
            raise ValueError(f"{name}: expected a flat tensor of {self.numel} elements, got {got}")
