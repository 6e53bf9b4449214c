"""Global unstructured pruning for users coming from torch.nn.utils.prune, on one top-k over the arena."""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping

import torch
from torch import nn

from panning import ops
from panning.arena import Arena, Filter, prunable
from panning.masks import Masks

from .layers import SparseLayer

Score = str | Callable[[str, torch.Tensor], torch.Tensor] | Mapping[str, torch.Tensor]


def _prune_count(amount, remaining: int) -> int:
    """How many of the `remaining` weights to prune, as torch.nn.utils.prune counts them: a fraction (a float in
    [0, 1]) of them, rounded, or a count (an int, not a bool, in [0, remaining])."""
    fraction = isinstance(amount, float)
    count = not fraction and not isinstance(amount, bool) and hasattr(amount, "__index__")
    if not (fraction and 0.0 <= amount <= 1.0 or count and 0 <= operator.index(amount) <= remaining):
        raise ValueError(f"amount: expected a fraction (a float in [0, 1]) or a count (an int in [0, {remaining}], "
                         f"the weights not yet pruned), got {amount!r}")
    return round(amount * remaining) if fraction else operator.index(amount)


def _scores(arena: Arena, score: Score) -> torch.Tensor:
    """The flat scores `score` gives the arena's weights, in their dtype."""
    if isinstance(score, str) and score == "l1":
        return arena.weights.abs()
    if not isinstance(score, Mapping) and not callable(score):
        raise ValueError(f"score: expected 'l1', a function (name, weight) -> scores or a mapping, got {score!r}")
    if not isinstance(score, Mapping):
        with torch.no_grad():
            score = {name: score(name, param.detach()) for name, param in arena}
    return arena.flatten({name: score[name].to(arena.device, arena.weights.dtype) for name in arena.names
                          if name in score}, name="score")


def _current_masks(arena: Arena, model: nn.Module) -> torch.Tensor:
    """The flat mask already in place: the masks of sparse layers, all kept elsewhere."""
    current = {}
    for name, param in arena:
        path, _, attr = name.rpartition(".")
        owner = model.get_submodule(path)
        sparse = isinstance(owner, SparseLayer)
        current[name] = owner.mask_of(attr) if sparse else torch.ones_like(param, dtype=torch.bool)
    return arena.flatten(current)


@torch.no_grad()
def global_prune(model: nn.Module, amount: float | int, *, score: Score = "l1",
                 include: Filter = prunable) -> Masks:
    """Masks pruning `amount` of the prunable weights of `model` globally; the model is not changed.

    amount, as in torch.nn.utils.prune: a float is a FRACTION of the weights not yet pruned (0.9 prunes 90%,
    rounded as torch rounds); an int is a COUNT of weights: `global_prune(model, 1)` prunes one weight. An amount
    that would leave no weight (1.0, or every remaining weight) is refused, as sparsity 1 is everywhere in
    panning. (`panning.prune` and the command line take a sparsity instead, always a fraction in [0, 1); see
    docs/cli.md.)

    The semantics of torch.nn.utils.prune.global_unstructured over the weights `include` selects (by default every
    prunable weight of panning.adapter): the lowest scores are pruned; weights already pruned (masks of sparse
    layers) stay pruned. score: "l1" (|weight|), a function (name, weight) -> scores of the weight's shape, or a
    mapping name -> scores (like torch's importance_scores, but ranked as given: torch's L1Unstructured ranks their
    absolute values). Unlike torch, ties are broken deterministically (the lower flat index is kept) and the work is
    one top-k over the arena. Apply with `panning.sparsify(model, masks)`.
    """
    arena = Arena(model, include=include, share=False)
    scores = _scores(arena, score)
    current = _current_masks(arena, model)
    remaining = int(current.sum())
    keep = remaining - _prune_count(amount, remaining)
    if remaining and not keep:
        raise ValueError(f"amount: {amount!r} prunes all {remaining:,} remaining weights, keeping none (sparsity 1 "
                         f"removes every weight); prune at most {remaining - 1:,}")
    flat = torch.zeros_like(current)
    flat[current] = ops.topk_mask(scores[current], keep)
    return Masks.from_flat(arena, flat)
