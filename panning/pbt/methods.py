"""Every pruning-before-training method as a function of one `Problem`, returning a flat bool mask.

A method is a criterion (panning.criteria) plus a way of applying it: one shot (magnitude, random,
SNIP, GraSP), iterated along the exponential schedule (SynFlow, iterative SNIP, FORCE), or Panning.
The options each method accepts, with their defaults, are listed in METHODS.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import criteria
from ..arena import Arena
from ..data import class_balanced_batch
from .iterative import StepHook, iterate
from .masking import global_mask
from .panning import PanningIndices, pan
from .schedule import check_steps, keep_count


@dataclass
class Problem:
    """What a method prunes: the model and its arena, data (None for data-free methods), one sample's
    shape, the target sparsity, the generator every random draw comes from, and an optional step hook."""

    model: nn.Module
    arena: Arena
    dataset: Dataset | None
    input_shape: tuple[int, ...]
    sparsity: float
    generator: torch.Generator
    on_step: StepHook | None = None

    def batch(self, per_class: int) -> criteria.Batch:
        """A fresh class-balanced batch on the model's device."""
        x, y = class_balanced_batch(self.dataset, per_class, generator=self.generator)
        return x.to(self.arena.device), y.to(self.arena.device)

    def one_shot(self, scores: torch.Tensor) -> torch.Tensor:
        mask = global_mask(scores, keep_count(self.arena.numel, self.sparsity))
        if self.on_step is not None:
            self.on_step(0, mask)
        return mask

    def iterate(self, score, iterations: int, *, keep_pruned: bool) -> torch.Tensor:
        return iterate(score, self.arena.numel, self.arena.device, self.sparsity, check_steps(iterations),
                       keep_pruned=keep_pruned, on_step=self.on_step)


def _check_per_class(per_class) -> int:
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class: expected a positive int, got {per_class!r}")
    return per_class


def magnitude(p: Problem) -> torch.Tensor:
    return p.one_shot(criteria.magnitude(p.arena))


def random(p: Problem) -> torch.Tensor:
    return p.one_shot(criteria.random(p.arena, generator=p.generator))


def snip(p: Problem, per_class: int) -> torch.Tensor:
    return p.one_shot(criteria.snip(p.model, p.arena, p.batch(_check_per_class(per_class))))


def grasp(p: Problem, per_class: int, temperature: float) -> torch.Tensor:
    batch = p.batch(_check_per_class(per_class))
    return p.one_shot(criteria.grasp(p.model, p.arena, batch, temperature=temperature))


def synflow(p: Problem, iterations: int) -> torch.Tensor:
    return p.iterate(lambda mask, step: criteria.synflow(p.model, p.arena, p.input_shape, mask=mask),
                     iterations, keep_pruned=True)


def iterative_snip(p: Problem, iterations: int, per_class: int) -> torch.Tensor:
    _check_per_class(per_class)
    return p.iterate(lambda mask, step: criteria.iterative_snip(p.model, p.arena, p.batch(per_class), mask),
                     iterations, keep_pruned=True)


def force(p: Problem, iterations: int, per_class: int) -> torch.Tensor:
    _check_per_class(per_class)
    return p.iterate(lambda mask, step: criteria.force(p.model, p.arena, p.batch(per_class), mask),
                     iterations, keep_pruned=False)


def panning(p: Problem, iterations: int, per_class: int, temperature: float) -> torch.Tensor:
    indices = PanningIndices(p.model, p.arena, p.dataset, p.input_shape, per_class=per_class,
                             temperature=temperature, generator=p.generator)
    return pan(indices, p.sparsity, iterations=iterations, on_step=p.on_step)


def rl_panning(p: Problem, agent, iterations: int, per_class: int, temperature: float) -> torch.Tensor:
    """Panning with index weights from a trained agent (panning.pbt.agent): one deterministic rollout."""
    from .agent import load_agent, rollout
    from .env import PanningEnv

    if agent is None:
        raise ValueError("agent: rl_panning needs a trained agent; train one for this network with "
                         "`panning agent --action train --model M --width W --out PATH` (docs/agent.md) "
                         "and pass --agent PATH")
    seed = int(torch.randint(2 ** 31, (1,), generator=p.generator))
    env = PanningEnv(p.model, p.dataset, p.input_shape, iterations=iterations, per_class=per_class,
                     temperature=temperature, seed=seed, arena=p.arena)
    mask = rollout(load_agent(agent, env), env, p.sparsity)
    if p.on_step is not None:
        p.on_step(iterations - 1, mask)
    return mask


@dataclass(frozen=True)
class Method:
    """A method's function, whether it needs data, and its options with their defaults."""

    run: Callable[..., torch.Tensor]
    needs_data: bool
    defaults: dict[str, Any]

    def steps(self, options: dict[str, Any]) -> int:
        """How many scoring steps the method takes with `options` (for progress bars)."""
        return options.get("iterations", 1)


_BATCH = {"per_class": 10}
_ITERATIONS = {"iterations": 100}
METHODS: dict[str, Method] = {
    "random": Method(random, False, {}),
    "magnitude": Method(magnitude, False, {}),
    "snip": Method(snip, True, dict(_BATCH)),
    "grasp": Method(grasp, True, {**_BATCH, "temperature": criteria.TEMPERATURE}),
    "synflow": Method(synflow, False, dict(_ITERATIONS)),
    "iterative_snip": Method(iterative_snip, True, {**_ITERATIONS, **_BATCH}),
    "force": Method(force, True, {**_ITERATIONS, **_BATCH}),
    "panning": Method(panning, True, {**_ITERATIONS, **_BATCH, "temperature": criteria.TEMPERATURE}),
    "rl_panning": Method(rl_panning, True, {"agent": None, **_ITERATIONS, **_BATCH,
                                            "temperature": criteria.TEMPERATURE}),
}
