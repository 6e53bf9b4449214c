"""Every pruning-before-training method as a function of one `Problem`, returning a flat bool mask.

A method is a criterion (panning.criteria) plus a way of applying it: one shot (magnitude, random,
SNIP, GraSP), or as a scorer of the pruning loop along the exponential schedule (SynFlow, iterative
SNIP, FORCE, Panning). The options each method accepts, with their defaults, are listed in METHODS;
`PruneConfig` holds what a run does (the method, its options, the sparsity, the seed), checked once when built:
by panning.prune from its keywords, by the command line from its options before any work.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import checks, criteria
from ..arena import Arena
from ..config import SEED, SPARSITY, Config, ConfigError, one_of, setting
from ..criteria import scores
from ..sparsity import ROUNDINGS, warn_if_tied
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
        return self.loop(lambda step, mask, sparsity: scores, 1, keep_pruned=True)

    def loop(self, score: Scorer, iterations: int, *, keep_pruned: bool, rounding: str = "nearest") -> torch.Tensor:
        def first_checked(step: int, mask: torch.Tensor, sparsity: float) -> torch.Tensor:
            scores = score(step, mask, sparsity)
            if step == 0:
                warn_if_tied(self.arena, scores)
            return scores

        return prune_loop(first_checked, self.arena.numel, self.sparsity, iterations, self.arena.device,
                          keep_pruned=keep_pruned, rounding=rounding, on_step=self.on_step)


# Every method calls the criteria's one definition (panning.criteria.scores): panning.prune has checked the
# arguments the public criteria check.
def magnitude(p: Problem) -> torch.Tensor:
    return p.one_shot(scores.magnitude(p.arena))


def random(p: Problem) -> torch.Tensor:
    return p.one_shot(scores.random(p.arena, p.generator))


def snip(p: Problem, per_class: int) -> torch.Tensor:
    return p.one_shot(scores.snip(p.model, p.arena, p.batches(per_class)(0)))


def grasp(p: Problem, per_class: int, temperature: float) -> torch.Tensor:
    return p.one_shot(scores.grasp(p.model, p.arena, p.batches(per_class)(0), temperature))


def synflow(p: Problem, iterations: int) -> torch.Tensor:
    return p.loop(lambda step, mask, sparsity: scores.synflow(p.model, p.arena, p.input_shape, mask), iterations,
                  keep_pruned=True)


def iterative_snip(p: Problem, iterations: int, per_class: int) -> torch.Tensor:
    batches = p.batches(per_class)
    return p.loop(lambda step, mask, sparsity: scores.iterative_snip(p.model, p.arena, batches(step), mask),
                  iterations, keep_pruned=True)


def force(p: Problem, iterations: int, per_class: int) -> torch.Tensor:
    batches = p.batches(per_class)
    return p.loop(lambda step, mask, sparsity: scores.snip(p.model, p.arena, batches(step), mask), iterations,
                  keep_pruned=False)


def panning(p: Problem, iterations: int, per_class: int, temperature: float, indices: str,
            rounding: str) -> torch.Tensor:
    source = PanningIndices(p.model, p.arena, p.dataset, p.input_shape, per_class=per_class,
                            temperature=temperature, generator=p.generator, variant=indices)
    return p.loop(PanningScorer(source), iterations, keep_pruned=False, rounding=rounding)


def rl_panning(p: Problem, agent, iterations: int, per_class: int, temperature: float) -> torch.Tensor:
    """Panning with index weights from a trained agent (panning.pbt.rl.agent): one deterministic rollout."""
    from .rl.agent import load_agent, rollout
    from .rl.env import PanningEnv

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

#: The options a method may take (PruneConfig's fields after method, sparsity and seed).
OPTIONS = ("iterations", "per_class", "temperature", "indices", "rounding", "agent")


@dataclass(frozen=True)
class PruneConfig(Config):
    """What panning.prune does: the method (one of METHODS), the fraction of weights removed, in [0, 1), the seed
    of every random draw, and the method's options (None: the method's default, METHODS[method].defaults). Every
    field is checked once when built; an option the method does not take, and rl_panning without an agent, are
    refused (a ConfigError naming the option, which the command line names by its flag)."""

    method: str = setting("panning", check=one_of(METHODS))
    sparsity: float = SPARSITY.field(0.9)
    seed: int = SEED.field(0)
    iterations: int | None = setting(None, check=checks.positive_int)
    per_class: int | None = setting(None, check=checks.positive_int)
    temperature: float | None = setting(None, check=checks.positive)
    indices: str | None = setting(None, check=one_of(VARIANTS))
    rounding: str | None = setting(None, check=one_of(ROUNDINGS))
    agent: str | os.PathLike | None = None  # the path of an agent saved by panning.pbt.rl.agent.save_agent

    def relate(self) -> None:
        accepted = METHODS[self.method].defaults
        for name in self.given:
            if name not in accepted:
                raise ConfigError(name, f"method {self.method!r} does not accept it (it takes "
                                        f"{', '.join(accepted) or 'no options'})")
        if "agent" in accepted and self.agent is None:
            raise ConfigError("agent", f"method {self.method!r} needs a trained agent; train one for this network "
                                       "with `panning agent --action train --model M --width W --out PATH` "
                                       "(docs/agent.md) and pass --agent PATH")

    @property
    def given(self) -> dict[str, Any]:
        """The options set (not None)."""
        return {name: getattr(self, name) for name in OPTIONS if getattr(self, name) is not None}

    @property
    def options(self) -> dict[str, Any]:
        """Every option of the method: its defaults updated with the options set."""
        return {**METHODS[self.method].defaults, **self.given}
