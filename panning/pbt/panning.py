"""Neural Network Panning (Kang, Li, Yao & Li, ACCV 2022) as its authors compute it: multi-index,
multi-process pruning before training. See docs/pbt.md for the sources and every departure.

At each step e of n, with w the weights at initialization (never changed) and the step's batch:
- SNIP index w * g and GraSP index w * Hg, SIGNED, from one forward of the dense network in train mode
  with logits / 200 and one double backward (g = dL/dw, Hg from d|g|^2/dw);
- SynFlow index w * dR/dw_eff, SIGNED, on the |w| * m network of the current mask (eval mode, all-ones
  input), so pruned weights keep a score and may come back;
- each index normalized to |x - mean| / std over all prunable weights at once, combined with weights
  (a_SynFlow, a_SNIP, a_GraSP) chosen by the step's SCHEDULED sparsity 1 - (1 - s)^((e + 1) / n) with the
  authors' stage rule (HandPolicy), and the global top-k over all weights kept.

`PanningIndices` computes the raw indices; `PanningScorer` turns them into one step's scores for the
pruning loop (panning.pbt.iterative), which owns the schedule and the masking, as for every method.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import criteria, ops
from ..criteria import passes, scores
from ..sparsity import global_mask
from .batches import Batches

#: The order of the indices in every (3, N) index stack and every weight vector.
INDICES = ("synflow", "snip", "grasp")

#: (upper bound of the step's sparsity, (a_SynFlow, a_SNIP, a_GraSP)): the authors' stages.
WEIGHTS_BY_SPARSITY = (
    (0.80, (0.2, 0.5, 0.3)),
    (0.90, (0.2, 0.4, 0.4)),
    (0.98, (0.2, 0.3, 0.5)),
    (0.99, (0.4, 0.2, 0.4)),
    (1.00, (0.5, 0.0, 0.5)),
)

#: Index definitions: "authors" (signed, as above, the default) or "nonnegative" (the ablation: the
#: library's first version, |w * g| at T = 1, w * Hg at T = 200, |w| * m * dR/dw_eff; see docs/pbt.md).
VARIANTS = ("authors", "nonnegative")

#: policy(step, scheduled sparsity of the step) -> the three index weights of that step.
Policy = Callable[[int, float], tuple[float, float, float]]


def index_weights(sparsity: float) -> tuple[float, float, float]:
    """The weights of the first stage whose upper bound `sparsity` does not exceed (a table lookup; the
    hand schedule moves through this table at most one stage per step, see HandPolicy)."""
    return next(weights for bound, weights in WEIGHTS_BY_SPARSITY if sparsity <= bound)


class HandPolicy:
    """The authors' hand schedule of index weights: a stage counter starts at 0 and, at each step, moves one
    stage up if the step's scheduled sparsity exceeds the current stage's upper bound (strictly: a sparsity
    equal to a bound stays in that stage). It never moves more than one stage per step, so a schedule that
    jumps over two bounds at once lags behind `index_weights`. Call it in step order; step 0 restarts it.
    """

    def __init__(self) -> None:
        self.stage = 0

    def __call__(self, step: int, sparsity: float) -> tuple[float, float, float]:
        if step == 0:
            self.stage = 0
        if self.stage < len(WEIGHTS_BY_SPARSITY) - 1 and WEIGHTS_BY_SPARSITY[self.stage][0] < sparsity:
            self.stage += 1
        return WEIGHTS_BY_SPARSITY[self.stage][1]


#: The paper's hand-scheduled policy (a shared HandPolicy: one run at a time; the loop makes its own).
hand_policy = HandPolicy()


class PanningIndices:
    """The raw indices of Panning for a model: `indices(step, mask)` is the (3, N) stack (SynFlow, SNIP, GraSP).

    SNIP and GraSP are computed on the dense network with the step's class-balanced batch of `per_class`
    samples per class drawn from `dataset` with `generator` (panning.pbt.batches.Batches: fresh per step,
    or with `batches=B` only B batches, step e using batch e mod B, and their indices cached, as the RL
    agent's episodes do: the dense indices do not depend on the mask). `variant` picks the index
    definitions (VARIANTS). Its callers (panning.prune, the environments) have checked the arguments.
    """

    def __init__(self, model: nn.Module, arena, dataset: Dataset, input_shape, *, per_class: int = 10,
                 temperature: float = criteria.TEMPERATURE, generator: torch.Generator | None = None,
                 batches: int | None = None, variant: str = "authors"):
        self.model, self.arena, self.dataset = model, arena, dataset
        self.input_shape = input_shape
        self.per_class = per_class
        self.temperature = temperature
        self.generator = generator
        self.batches = batches
        self.variant = variant
        self._source = Batches(dataset, per_class, generator, arena.device, cached=batches)
        self._dense: dict[int, tuple[torch.Tensor, float, float]] = {}

    def batch(self, step: int) -> criteria.Batch:
        """The class-balanced batch of `step`."""
        return self._source(step)

    def dense(self, step: int) -> torch.Tensor:
        """(2, N): the SNIP and GraSP indices of the dense network on the batch of `step`."""
        return self._dense_pass(step)[0]

    def loss_gtg(self, step: int) -> tuple[float, float]:
        """The dense network's loss (logits / temperature) on the batch of `step` and its squared gradient norm
        over the prunable weights: from the same pass as `dense(step)` (the RL environment observes them)."""
        return self._dense_pass(step)[1:]

    def _dense_pass(self, step: int) -> tuple[torch.Tensor, float, float]:
        key = self._source.key(step)
        if key not in self._dense:
            if not self.batches:
                self._dense.clear()
            self._dense[key] = self._compute_dense(self.batch(step))
        return self._dense[key]

    def flow(self, mask: torch.Tensor) -> passes.Flow:
        """The SynFlow pass on the |w| * mask network (its gradient, and the flowing weights it implies)."""
        return passes.flow(self.model, self.arena, self.input_shape, mask)

    def __call__(self, step: int, mask: torch.Tensor, flow: passes.Flow | None = None) -> torch.Tensor:
        """(3, N): the SynFlow index on `mask` (from `flow` when the caller already ran `self.flow(mask)`, e.g.
        for the flow sparsity of that mask, as the authors' environment does) and `dense(step)`."""
        flow = self.flow(mask) if flow is None else flow
        weights = self.arena.weights.detach()
        synflow = flow.signed(weights) if self.variant == "authors" else flow.scores(weights.dtype)
        return torch.cat([synflow.unsqueeze(0), self.dense(step)])

    def _compute_dense(self, batch: criteria.Batch) -> tuple[torch.Tensor, float, float]:
        result = passes.gradient_pass(self.model, self.arena, batch, self.temperature)
        snip = result.snip if self.variant == "authors" else scores.snip(self.model, self.arena, batch)
        return torch.stack([snip, result.grasp]), result.loss, result.gtg


def combine(indices: torch.Tensor, weights) -> torch.Tensor:
    """The combined score of one step: each of the (3, N) raw indices normalized to |x - mean| / std over
    the arena, weighted by `weights` and summed (one panning.ops.saliency call)."""
    weights = torch.as_tensor(weights, dtype=torch.float64, device=indices.device)
    return ops.saliency(indices, weights)


def step_mask(indices: torch.Tensor, weights, k: int) -> torch.Tensor:
    """One Panning step outside the loop (the RL environment's): combine the (3, N) raw indices with the
    three `weights` and keep the global top-k. One saliency call, one top-k call."""
    return global_mask(combine(indices, weights), k)


class PanningScorer:
    """Panning as a scorer of the pruning loop: step e's combined score, with the weights `policy` gives for
    the step's scheduled sparsity, which the loop passes (default: a fresh HandPolicy, the paper's hand
    schedule)."""

    def __init__(self, indices: PanningIndices, policy: Policy | None = None):
        self.indices = indices
        self.policy = HandPolicy() if policy is None else policy

    def __call__(self, step: int, mask: torch.Tensor, sparsity: float) -> torch.Tensor:
        return combine(self.indices(step, mask), self.policy(step, sparsity))
