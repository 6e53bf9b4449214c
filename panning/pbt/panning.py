"""Neural Network Panning (Kang, Li, Yao & Li, ACCV 2022): multi-index, multi-process pruning before training.

Each of n steps scores every weight with three indices — SynFlow on the currently masked network, SNIP
and GraSP on the dense network with a fresh class-balanced batch — normalizes each to |z| over the arena,
combines them with weights chosen by the sparsity of the step, and keeps the global top-k, where k
follows the exponential schedule. Weights pruned at one step compete again at the next (the dense
indices still score them), so they may come back. Per step: exactly one `panning.ops.saliency` call and
one `panning.ops.topk_mask` call over the arena.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import criteria, ops
from ..criteria import _checks
from ..data import class_balanced_batch
from .iterative import StepHook
from .schedule import check_steps, exponential_counts

#: The order of the indices in every (3, N) index stack and every weight vector.
INDICES = ("synflow", "snip", "grasp")

#: (upper bound of the step's sparsity, (a_SynFlow, a_SNIP, a_GraSP)), from the paper.
WEIGHTS_BY_SPARSITY = (
    (0.80, (0.2, 0.5, 0.3)),
    (0.90, (0.2, 0.4, 0.4)),
    (0.98, (0.2, 0.3, 0.5)),
    (0.99, (0.4, 0.2, 0.4)),
    (1.00, (0.5, 0.0, 0.5)),
)

#: policy(step, sparsity of the step) -> the three index weights of that step.
Policy = Callable[[int, float], tuple[float, float, float]]


def index_weights(sparsity: float) -> tuple[float, float, float]:
    """The hand-set weights (a_SynFlow, a_SNIP, a_GraSP) for a step that prunes to `sparsity`."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity: expected a number in [0, 1], got {sparsity!r}")
    return next(weights for bound, weights in WEIGHTS_BY_SPARSITY if sparsity <= bound)


def hand_policy(step: int, sparsity: float) -> tuple[float, float, float]:
    """The paper's hand-scheduled Panning: weights by the step's sparsity only."""
    return index_weights(sparsity)


class PanningIndices:
    """The raw indices of Panning for a model: `indices(step, mask)` is the (3, N) stack (SynFlow, SNIP, GraSP).

    SNIP and GraSP are computed on the dense network with a class-balanced batch of `per_class` samples
    per class drawn from `dataset` with `generator`. By default every call draws a fresh batch. With
    `batches=B` only B batches are ever drawn (step e uses batch e mod B) and their SNIP/GraSP scores are
    cached, as the RL agent's episodes do: the dense indices do not depend on the mask.
    """

    def __init__(self, model: nn.Module, arena, dataset: Dataset, input_shape, *, per_class: int = 10,
                 temperature: float = criteria.TEMPERATURE, generator: torch.Generator | None = None,
                 batches: int | None = None):
        _checks.model_and_arena(model, arena)
        if batches is not None:
            check_steps(batches, "batches")
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"per_class: expected a positive int, got {per_class!r}")
        self.model, self.arena, self.dataset = model, arena, dataset
        self.input_shape = _checks.input_shape(input_shape)
        self.per_class = per_class
        self.temperature = _checks.positive("temperature", temperature)
        self.generator = generator
        self.batches = batches
        self._cache: dict[int, tuple[criteria.Batch, torch.Tensor]] = {}
        class_balanced_batch(dataset, per_class, generator=torch.Generator())  # fail now on a bad per_class

    def batch(self, step: int) -> criteria.Batch:
        """The class-balanced batch of `step` (fresh per call unless batches are cached)."""
        return self._dense(step)[0]

    def dense(self, step: int) -> torch.Tensor:
        """(2, N): SNIP and GraSP of the dense network on the batch of `step`."""
        return self._dense(step)[1]

    def __call__(self, step: int, mask: torch.Tensor) -> torch.Tensor:
        synflow = criteria.synflow(self.model, self.arena, self.input_shape, mask=mask)
        return torch.cat([synflow.unsqueeze(0), self.dense(step)])

    def _dense(self, step: int) -> tuple[criteria.Batch, torch.Tensor]:
        key = step % self.batches if self.batches else None
        if key is not None and key in self._cache:
            return self._cache[key]
        x, y = class_balanced_batch(self.dataset, self.per_class, generator=self.generator)
        batch = (x.to(self.arena.device), y.to(self.arena.device))
        dense = torch.stack([criteria.snip(self.model, self.arena, batch),
                             criteria.grasp(self.model, self.arena, batch, temperature=self.temperature)])
        if key is not None:
            self._cache[key] = (batch, dense)
        return batch, dense


def step_mask(indices: torch.Tensor, weights, k: int) -> torch.Tensor:
    """One Panning step: combine the (3, N) raw indices, each normalized to |z| over the arena, with the
    three `weights`, and keep the global top-k. One saliency call, one top-k call."""
    weights = torch.as_tensor(weights, dtype=torch.float64, device=indices.device)
    return ops.topk_mask(ops.saliency(indices, weights), k)


def pan(indices: PanningIndices, sparsity: float, *, iterations: int = 100, policy: Policy = hand_policy,
        on_step: StepHook | None = None) -> torch.Tensor:
    """Run Panning to `sparsity` in `iterations` steps; returns the flat bool mask (exact sparsity).

    At step e (0-based) the kept count is round(N * (1 - sparsity) ** ((e + 1) / iterations)) and the index
    weights are policy(e, that step's sparsity) — by default the paper's table (index_weights).
    """
    if not isinstance(indices, PanningIndices):
        raise TypeError(f"indices: expected PanningIndices, got {type(indices).__name__}")
    numel = indices.arena.numel
    counts = exponential_counts(numel, sparsity, check_steps(iterations))
    mask = torch.ones(numel, dtype=torch.bool, device=indices.arena.device)
    for step, k in enumerate(counts):
        mask = step_mask(indices(step, mask), policy(step, 1.0 - k / numel), k)
        if on_step is not None:
            on_step(step, mask)
    return mask
