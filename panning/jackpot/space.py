"""The search space of a lottery-jackpot search: a model's searched layers as panning.nn sparse layers with
scores, laid out flat.

`SearchSpace(model, include)` swaps the selected Linear / Conv1d / Conv2d layers of `model` (in place) for the
drop-in sparse layers of `panning.nn` with trainable `scores` (`panning.sparsify(..., scores=True)`), freezes
every parameter of the model, and lays weights, scores and masks out in one arena: each layer's weight,
`scores` and `mask` are views into the flat buffers `arena.weights`, `scores` and `mask`. So one segmented
top-k over the flat scores refreshes every layer's mask at once, while the forward is the sparse layers' own:
`W * mask` with the mask as a straight-through stand-in for top-k(scores), which gives

    grad_scores = dL/dW_eff * W      for every weight, pruned ones included.

The weights are never written (sparse layers with scores keep the weights behind the mask).
"""
from __future__ import annotations

import torch
from torch import nn

from ..arena import Arena, Filter
from ..masks import Masks
from ..nn import SparseLayer, densify, sparsify


class SearchSpace:
    """The searched layers of `model` (selected by `include`) as sparse layers with flat scores and mask.

    Construction validates everything before changing the model. `release()` gives the parameters their
    original requires_grad back (the scores stay, so the model keeps wearing the mask).
    """

    def __init__(self, model: nn.Module, include: Filter):
        if any(isinstance(m, SparseLayer) for m in model.modules()):
            raise ValueError("model: already holds sparse layers (panning.nn); search a plain model")
        plain = Arena(model, include=include, share=False)  # validates, changes nothing
        unsupported = [name for name in plain.names if type(model.get_submodule(name.rpartition(".")[0]))
                       not in (nn.Linear, nn.Conv1d, nn.Conv2d)]
        if unsupported:
            raise TypeError(f"include: {unsupported[0]} belongs to a subclass of Linear / Conv; only exact "
                            "Linear, Conv1d and Conv2d layers can be searched")
        self._requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = sparsify(model, Masks.ones(plain), mode="masked", scores=True)
        searched = set(plain.names)
        self.arena = Arena(self.model,
                           include=lambda name, module: (f"{name}.weight" if name else "weight") in searched)
        self.layers: list[SparseLayer] = [self.model.get_submodule(n.rpartition(".")[0]) for n in self.arena.names]
        self.scores = self.arena.zeros()
        self.mask = self.arena.zeros(torch.bool).fill_(True)
        for layer, scores, mask in zip(self.layers, self.arena.split(self.scores).values(),
                                       self.arena.split(self.mask).values()):
            layer.scores = nn.Parameter(scores)  # shares the flat buffer's storage
            layer.mask = mask
        self.params = [layer.scores for layer in self.layers]
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

    def undo(self) -> nn.Module:
        """Put plain layers back (sharing the same, unchanged weights) and the original requires_grad flags:
        the model as it was given, for a search that fails before it starts. Returns the model."""
        self.mask.fill_(True)  # densify zeroes nothing behind an all-kept mask
        for layer in self.layers:
            layer.scores = None
        self.release()
        return densify(self.model)

    def release(self) -> None:
        """Give every model parameter its requires_grad from before the search (the scores keep theirs)."""
        for name, p in self.model.named_parameters():
            if name in self._requires_grad:
                p.requires_grad_(self._requires_grad[name])
