"""The search space of a lottery-jackpot search: a model's searched layers as panning.nn sparse layers with
scores, laid out flat.

`SearchSpace(model, include)` swaps the selected layers of `model` (in place; any prunable parameter of
panning.adapter) for the sparse layers of `panning.nn` with trainable scores (`panning.sparsify(...,
scores=True)`), freezes every parameter of the model, and lays weights, scores and masks out in one arena: each
searched weight, its scores and its mask are views into the flat buffers `arena.weights`, `scores` and `mask`. So
one segmented top-k over the flat scores refreshes every layer's mask at once, while the forward is the sparse
layers' own: `W * mask` with the mask as a straight-through stand-in for top-k(scores), which gives

    grad_scores = dL/dW_eff * W      for every weight, pruned ones included.

The weights are never written (sparse layers with scores keep the weights behind the mask).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import adapter
from ..arena import Arena, Filter
from ..masks import Masks
from ..nn import SparseLayer, densify, sparsify
from ..nn.layers import mask_name, scores_name


class SearchSpace:
    """The searched layers of `model` (selected by `include`) as sparse layers with flat scores and mask.

    Construction validates everything before changing the model. `release()` gives the parameters their
    original requires_grad back (the scores stay, so the model keeps wearing the mask).
    """

    def __init__(self, model: nn.Module, include: Filter):
        if any(isinstance(m, SparseLayer) for m in model.modules()):
            raise ValueError("model: already holds sparse layers (panning.nn); search a plain model")
        plain = Arena(model, include=include, share=False)  # validates, changes nothing
        self._requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self._buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        self._training = [(m, m.training) for m in model.modules()]
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = sparsify(model, Masks.ones(plain), mode="masked", scores=True)
        searched = set(plain.names)
        self.arena = Arena(self.model, include=lambda path, module: any(
            (f"{path}.{attr}" if path else attr) in searched for attr in adapter.parameter_names(module)))
        #: (sparse layer, masked parameter's attribute name) of every searched weight
        self.layers: list[tuple[SparseLayer, str]] = [
            (self.model.get_submodule(path), attr) for path, _, attr in (n.rpartition(".") for n in self.arena.names)]
        self.scores = self.arena.zeros()
        self.mask = self.arena.zeros(torch.bool).fill_(True)
        self.params = []
        for (layer, attr), scores, mask in zip(self.layers, self.arena.split(self.scores).values(),
                                               self.arena.split(self.mask).values()):
            setattr(layer, scores_name(attr), nn.Parameter(scores))  # shares the flat buffer's storage
            setattr(layer, mask_name(attr), mask)
            self.params.append(layer.scores_of(attr))
        self.segment = torch.repeat_interleave(torch.arange(len(self.layers), device=self.arena.device),
                                               self.arena.sizes.to(self.arena.device))

    @property
    def names(self) -> list[str]:
        """The searched weights, named as in the model."""
        return self.arena.names

    @torch.no_grad()
    def set_scores(self, flat: torch.Tensor) -> None:
        self.scores.copy_(flat)

    @torch.no_grad()
    def set_mask(self, flat: torch.Tensor) -> None:
        self.mask.copy_(flat)

    def score_grad(self) -> torch.Tensor:
        """dL/dW_eff * W of the last backward, flat (zeros where a layer got no gradient)."""
        return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                          for p in self.params])

    def masks(self) -> Masks:
        """The current mask as a `Masks` over the searched weights (a copy)."""
        return Masks.from_flat(self.arena, self.mask)

    def score_dict(self) -> dict[str, torch.Tensor]:
        """The scores per searched weight (copies)."""
        return {name: s.detach().clone() for name, s in self.arena.split(self.scores).items()}

    @torch.no_grad()
    def undo(self) -> nn.Module:
        """Put plain layers back (sharing the same, unchanged weights), the original requires_grad flags, buffers
        (BatchNorm statistics) and train/eval modes: the model as it was given, for a search that fails. Returns
        the model."""
        self.mask.fill_(True)  # densify zeroes nothing behind an all-kept mask
        for layer, attr in self.layers:
            setattr(layer, scores_name(attr), None)
        self.release()
        model = densify(self.model)
        for name, buffer in model.named_buffers():
            if name in self._buffers:
                buffer.copy_(self._buffers[name])
        for module, flag in self._training:
            module.training = flag
        return model

    def release(self) -> None:
        """Give every model parameter its requires_grad from before the search (the scores keep theirs)."""
        for name, p in self.model.named_parameters():
            if name in self._requires_grad:
                p.requires_grad_(self._requires_grad[name])
