"""The panning environment (gymnasium): one episode is one n-step Panning run on the network at initialization,
with the three index weights chosen by an agent at every step (RL panning, docs/agent.md).

- action: 3 numbers in [-1, 1]; the index weights (SynFlow, SNIP, GraSP) are action + 1.
- observation (7, all in [0, 1]): dense loss and dense squared gradient norm (each min-max normalized
  over everything this environment has seen), |loss(masked) - loss(dense)| and |gradnorm^2(masked) -
  gradnorm^2(dense)| (normalized the same way), the effective sparsity of the current mask, the sparsity
  the next step prunes to, and e / n.
- reward of a step: -100 * |scheduled sparsity - effective sparsity| - d_loss - d_gradnorm (normalized);
  if the network dies (effective sparsity 1) the episode ends with an extra -(1 - e / n) * 100.
- the target sparsity is drawn per episode from `sparsity_range`, or fixed by reset(options={"sparsity": s}).

`arena` selects the prunable weights (default: every Linear/Conv weight of `model`, as a separate copy);
the model itself is never modified.

Losses and gradients are those of the step's class-balanced batch (mean cross-entropy, train mode); the
masked network's squared gradient norm counts its remaining weights only. SNIP, GraSP and the dense loss do
not depend on the mask, so they are computed once per batch and reused across episodes (`batches` distinct
batches, drawn once from `seed`); SynFlow and the masked loss are recomputed every step.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .. import criteria
from ..arena import Arena
from ..connectivity import effective_sparsity
from ..criteria._functional import loss_grad
from ..masks import Masks
from .panning import PanningIndices, step_mask
from .schedule import check_sparsity, check_steps, exponential_counts

DEATH_PENALTY = 100.0
SPARSITY_PENALTY = 100.0


class RunningRange:
    """Min-max normalization over every value seen so far: (v - min) / (max - min), 0 while max == min."""

    def __init__(self) -> None:
        self.low, self.high = float("inf"), float("-inf")

    def __call__(self, value: float) -> float:
        self.low, self.high = min(self.low, value), max(self.high, value)
        span = self.high - self.low
        return (value - self.low) / span if span > 0 else 0.0


class PanningEnv(gym.Env):
    """Panning with agent-chosen index weights; `mask` holds the flat mask after the last step."""

    metadata = {"render_modes": []}

    def __init__(self, model: nn.Module, dataset: Dataset, input_shape, *, iterations: int = 100,
                 per_class: int = 10, temperature: float = criteria.TEMPERATURE,
                 sparsity_range: tuple[float, float] = (0.8, 1.0), batches: int | None = None, seed: int = 0,
                 arena: Arena | None = None):
        super().__init__()
        low, high = (check_sparsity(s) for s in sparsity_range)
        if low > high:
            raise ValueError(f"sparsity_range: expected low <= high, got {sparsity_range}")
        self.iterations = check_steps(iterations)
        self.sparsity_range = (low, high)
        self.model = model
        self.arena = Arena(model, share=False) if arena is None else arena
        self.indices = PanningIndices(model, self.arena, dataset, input_shape, per_class=per_class,
                                      temperature=temperature, generator=torch.Generator().manual_seed(seed),
                                      batches=check_steps(batches or iterations, "batches"))
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(7,), dtype=np.float32)
        self._dense: dict[int, tuple[float, float]] = {}
        self._fresh_statistics()
        self.sparsity = high
        self.counts: list[int] = []
        self.step_index = 0
        self.mask = torch.ones(self.arena.numel, dtype=torch.bool, device=self.arena.device)

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode at the dense network. A seed also restarts the running normalization, so equal
        seeds give equal episodes. options={"sparsity": s} fixes the target sparsity."""
        super().reset(seed=seed)
        if seed is not None:
            self._fresh_statistics()
        options = options or {}
        unknown = set(options) - {"sparsity"}
        if unknown:
            raise ValueError(f"options: unknown keys {sorted(unknown)} (accepted: sparsity)")
        if "sparsity" in options:
            self.sparsity = check_sparsity(options["sparsity"])
        else:
            self.sparsity = float(self.np_random.uniform(*self.sparsity_range))
        self.counts = exponential_counts(self.arena.numel, self.sparsity, self.iterations)
        self.step_index = 0
        self.mask = torch.ones(self.arena.numel, dtype=torch.bool, device=self.arena.device)
        observation, _ = self._observe(0, effective=0.0)
        return observation, {"sparsity": self.sparsity}

    def step(self, action):
        if not self.counts or self.step_index >= self.iterations:
            raise RuntimeError("step: call reset() first; the episode has ended")
        e, n = self.step_index, self.iterations
        weights = np.clip(np.asarray(action, dtype=np.float64).reshape(3), -1.0, 1.0) + 1.0
        self.mask = step_mask(self.indices(e, self.mask), weights, self.counts[e])
        scheduled = 1.0 - self.counts[e] / self.arena.numel
        effective = effective_sparsity(self.model, Masks.from_flat(self.arena, self.mask), self.indices.input_shape)
        self.step_index = e + 1
        observation, (d_loss, d_grad) = self._observe(min(e + 1, n - 1), effective, at_step=e)
        reward = -SPARSITY_PENALTY * abs(scheduled - effective) - d_loss - d_grad
        dead = effective >= 1.0
        if dead:
            reward -= (1.0 - e / n) * DEATH_PENALTY
        terminated = dead or self.step_index == n
        info = {"sparsity": scheduled, "effective_sparsity": effective, "dead": dead, "d_loss": d_loss,
                "d_gradnorm": d_grad}
        return observation, float(reward), terminated, False, info

    # -- internals -------------------------------------------------------------------------------
    def _fresh_statistics(self) -> None:
        self._ranges = [RunningRange() for _ in range(4)]

    def _losses(self, step: int) -> tuple[float, float, float, float]:
        """(dense loss, dense |g|^2, masked loss, masked |g * m|^2) on the batch of `step`."""
        batch = self.indices.batch(step)
        key = step % self.indices.batches
        if key not in self._dense:
            loss, grad = loss_grad(self.model, self.arena, self.arena.weights, batch)
            self._dense[key] = (float(loss), float(grad.double().square().sum()))
        dense_loss, dense_grad = self._dense[key]
        loss, grad = loss_grad(self.model, self.arena, self.arena.weights * self.mask, batch)
        return dense_loss, dense_grad, float(loss), float((grad * self.mask).double().square().sum())

    def _observe(self, next_step: int, effective: float, at_step: int | None = None):
        """The observation after the current mask, and the normalized (d_loss, d_gradnorm) of the mask."""
        step = next_step if at_step is None else at_step
        dense_loss, dense_grad, loss, grad = self._losses(step)
        values = [dense_loss, dense_grad, abs(loss - dense_loss), abs(grad - dense_grad)]
        normalized = [rng(v) for rng, v in zip(self._ranges, values)]
        scheduled_next = 1.0 - self.counts[next_step] / self.arena.numel
        observation = np.array([*normalized, effective, scheduled_next, self.step_index / self.iterations],
                               dtype=np.float32)
        return np.clip(observation, 0.0, 1.0), (normalized[2], normalized[3])
