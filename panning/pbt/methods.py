"""Every pruning-before-training method as a function of one `Problem`, returning a flat bool mask.

A method is a criterion (panning.criteria) plus a way of applying it: one shot (magnitude, random,
SNIP, GraSP), or as a scorer of the pruning loop along the exponential schedule (SynFlow, iterative
SNIP, FORCE, Panning). The options each method accepts, with their defaults, are listed in METHODS;
`check_options` checks them once, at the public entry point (panning.prune).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import checks, criteria
from ..arena import Arena
from ..criteria import passes
from ..ops import product_score
from ..sparsity import ROUNDINGS, exponential_counts, warn_if_tied
from .batches import Batches
from .iterative import Scorer, StepHook, prune_loop
from .panning import VARIANTS, PanningIndices, PanningScorer


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

    def batches(self, per_class: int) -> Batches:
        """The run's batch source: a fresh class-balanced batch per step, on the model's device."""
        return Batches(self.dataset, per_class, self.generator, self.arena.device)

    def one_shot(self, scores: torch.Tensor) -> torch.Tensor:
        return self.loop(lambda step, mask: scores, 1, keep_pruned=True)

    def loop(self, score: Scorer, iterations: int, *, keep_pruned: bool, rounding: str = "nearest") -> torch.Tensor:
        counts = exponential_counts(self.arena.numel, self.sparsity, iterations, rounding)

        def first_checked(step: int, mask: torch.Tensor) -> torch.Tensor:
            scores = score(step, mask)
            if step == 0:
                warn_if_tied(self.arena, scores)
            return scores

        return prune_loop(first_checked, counts, self.arena.numel, self.arena.device, keep_pruned=keep_pruned,
                          on_step=self.on_step)


def magnitude(p: Problem) -> torch.Tensor:
    return p.one_shot(criteria.magnitude(p.arena))


def random(p: Problem) -> torch.Tensor:
    return p.one_shot(criteria.random(p.arena, generator=p.generator))


# The criteria's passes are called directly: panning.prune has checked the arguments the public criteria check.
def snip(p: Problem, per_class: int) -> torch.Tensor:
    return p.one_shot(_masked_snip(p, per_class)(0, None))


def grasp(p: Problem, per_class: int, temperature: float) -> torch.Tensor:
    return p.one_shot(passes.gradient_indices(p.model, p.arena, p.batches(per_class)(0), temperature)[1])


def synflow(p: Problem, iterations: int) -> torch.Tensor:
    dtype = p.arena.weights.dtype
    return p.loop(lambda step, mask: passes.flow(p.model, p.arena, p.input_shape, mask).scores(dtype),
                  iterations, keep_pruned=True)


def _masked_snip(p: Problem, per_class: int) -> Scorer:
    """|w * dL/dw_eff| at w_eff = w * mask (the dense network for mask None) on the step's batch: the score of
    SNIP, iterative SNIP and FORCE."""
    batches = p.batches(per_class)
    weights = p.arena.weights.detach()
    return lambda step, mask: product_score(weights, passes.masked_gradient(p.model, p.arena, batches(step), mask))


def iterative_snip(p: Problem, iterations: int, per_class: int) -> torch.Tensor:
    return p.loop(_masked_snip(p, per_class), iterations, keep_pruned=True)


def force(p: Problem, iterations: int, per_class: int) -> torch.Tensor:
    return p.loop(_masked_snip(p, per_class), iterations, keep_pruned=False)


def panning(p: Problem, iterations: int, per_class: int, temperature: float, indices: str,
            rounding: str) -> torch.Tensor:
    source = PanningIndices(p.model, p.arena, p.dataset, p.input_shape, per_class=per_class,
                            temperature=temperature, generator=p.generator, variant=indices)
    return p.loop(PanningScorer(source, p.sparsity, iterations), iterations, keep_pruned=False, rounding=rounding)


def rl_panning(p: Problem, agent, iterations: int, per_class: int, temperature: float) -> torch.Tensor:
    """Panning with index weights from a trained agent (panning.pbt.rl.agent): one deterministic rollout."""
    from .rl.agent import load_agent, rollout
    from .rl.env import PanningEnv

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
    "panning": Method(panning, True, {**_ITERATIONS, **_BATCH, "temperature": criteria.TEMPERATURE,
                                      "indices": "authors", "rounding": "nearest"}),
    "rl_panning": Method(rl_panning, True, {"agent": None, **_ITERATIONS, **_BATCH,
                                            "temperature": criteria.TEMPERATURE}),
}

#: The check of every option any method accepts (agent: checked where it is loaded).
_OPTION_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "iterations": checks.positive_int,
    "per_class": checks.positive_int,
    "temperature": checks.positive,
    "indices": lambda name, value: checks.choice(name, value, VARIANTS),
    "rounding": lambda name, value: checks.choice(name, value, ROUNDINGS),
    "agent": lambda name, value: value,
}


def check_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """`method`'s defaults updated with `options`, each checked; unknown options are a TypeError."""
    spec = METHODS[checks.choice("method", method, METHODS)]
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        accepted = ", ".join(spec.defaults) or "none"
        raise TypeError(f"options: {method!r} does not accept {unknown} (accepts: {accepted})")
    return {name: _OPTION_CHECKS[name](name, value) for name, value in {**spec.defaults, **options}.items()}
