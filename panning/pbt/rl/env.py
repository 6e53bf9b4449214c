"""The panning environment: one episode is one n-step Panning run on the network at initialization, with the
three index weights chosen by an agent at every step (RL panning; see docs/agent.md).

As in the authors' released environment (kangxiatao/RLPanning, pruner/panning.py `PruningEnv`):
- action: 3 numbers in [-1, 1]; the index weights (SynFlow, SNIP, GraSP) are action + 1.
- observation (7, in [0, 1]) after step e: the dense loss and dense squared gradient norm of the step's batch,
  each min-max normalized by a running range; |loss(masked) - loss(dense)| and |gtg(masked) - gtg(dense)| / 5
  divided by the same ranges' spans; the flow sparsity of the new mask; the step's scheduled sparsity;
  e / n. Losses are cross-entropies of logits / T (T = 200), gtg the squared norm of their gradient over every
  prunable weight. The ranges start from the dense values of the first 10 batches and grow with every dense
  and masked value seen.
- reward: -100 * |scheduled sparsity - flow sparsity| - (the two normalized differences); if the
  network dies (flow sparsity 1) the episode ends with an extra -(1 - e / n) * n.
- the target sparsity is drawn per episode by a `Curriculum` (the authors': U(0.8, 1) for the first 10,000
  steps, then U(0.9, 1) or U(0.98, 1) with equal odds), or fixed with reset(options={"sparsity": s}).
- the scheduled sparsity of step e is 1 - (1 - s) ** ((e + 1) / n) (the float the authors' code uses, not the
  rounded count's 1 - k / N); the flow sparsity (the authors' "effective sparsity": the fraction of weights
  pruned or carrying no synaptic flow) is read off the SynFlow pass of the new mask, which the next step needs
  anyway (`Flow.flowing`), as the authors do. It equals panning.connectivity's effective sparsity where no bias
  feeds a unit whose inputs are all pruned.

Departures (docs/agent.md): `batches` class-balanced batches are drawn once and reused across episodes (the
authors draw a fresh one every step), so SNIP, GraSP and the dense loss are computed once per batch.

`PanningLanes` steps B episodes that share one network at once (one saliency call and one top-k call per
step for all of them); `PanningEnv` is its gymnasium face for B = 1 and
panning.pbt.rl.vec_env.PanningVecEnv the stable-baselines3 one for any B.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ... import checks, criteria, ops
from ...arena import Arena
from ...criteria import arguments, lanes as lowered, passes
from ...criteria.functional import loss_grad
from ...sparsity import schedule
from ..panning import PanningIndices

SPARSITY_PENALTY = 100.0
GRADNORM_DIVISOR = 5.0
#: Dense batches whose loss and gtg start the running ranges (the authors' 10).
RANGE_WARMUP = 10
OBSERVATION_SIZE = 7


@dataclass(frozen=True)
class Curriculum:
    """The target sparsity of each episode: U(early) before `switch` environment steps, afterwards U(one of
    `late`, equal odds). switch=None keeps U(early) for ever; a switch of 0 or below starts with `late`."""

    early: tuple[float, float] = (0.8, 1.0)
    switch: int | None = 10_000
    late: tuple[tuple[float, float], ...] = ((0.9, 1.0), (0.98, 1.0))

    def __post_init__(self):
        for name, (low, high) in [("early", self.early), *(("late", r) for r in self.late)]:
            if not 0.0 <= low <= high <= 1.0:  # also refuses NaN; a non-number fails Python's comparison
                raise ValueError(f"curriculum.{name}: expected a range (low, high) with 0 <= low <= high <= 1, "
                                 f"got {(low, high)!r}")

    @classmethod
    def fixed(cls, low: float, high: float) -> Curriculum:
        return cls(early=(low, high), switch=None, late=())

    def draw(self, rng: np.random.Generator, steps_so_far: int) -> float:
        if self.switch is None or steps_so_far < self.switch or not self.late:
            low, high = self.early
        else:
            low, high = self.late[int(rng.integers(len(self.late)))]
        return float(rng.uniform(low, high))


class RunningRange:
    """The smallest and largest value seen; normalizes by them (0 while they are equal)."""

    def __init__(self, low: float = float("inf"), high: float = float("-inf")) -> None:
        self.low, self.high = low, high

    def add(self, value: float) -> None:
        self.low, self.high = min(self.low, value), max(self.high, value)

    @property
    def span(self) -> float:
        return self.high - self.low

    def position(self, value: float) -> float:
        return (value - self.low) / self.span if self.span > 0 else 0.0

    def distance(self, a: float, b: float) -> float:
        return abs(a - b) / self.span if self.span > 0 else 0.0


class PanningLanes:
    """B Panning episodes ("lanes") on one network, stepped together.

    Per step: one `ops.saliency` call (the lanes' SynFlow rows and the distinct SNIP/GraSP rows stacked, one
    weight row per lane), one `ops.topk_mask` call (B masks, each its own k), the lanes' SynFlow passes together
    (panning.criteria.lanes where the network is a plain stack, else one PanningIndices.flow per lane), turned
    into indices by PanningIndices so that the environment always uses Panning's own, and per lane its masked loss.
    """

    def __init__(self, model: nn.Module, dataset: Dataset, input_shape, lanes: int = 1, *, iterations: int = 100,
                 per_class: int = 10, temperature: float = criteria.TEMPERATURE, batches: int | None = None,
                 seed: int = 0, arena: Arena | None = None, curriculum: Curriculum | None = None):
        self.lanes, self.iterations, self.batches = checks.positive_ints(
            lanes=lanes, iterations=iterations, batches=batches if batches is not None else iterations)
        self.curriculum = curriculum if curriculum is not None else Curriculum()
        self.model = model
        self.arena = Arena(model, share=False) if arena is None else arena
        given = arguments.criterion(model, self.arena, input_shape=input_shape, temperature=temperature)
        input_shape, self.temperature = given["input_shape"], given["temperature"]
        self.indices = PanningIndices(model, self.arena, dataset, input_shape, per_class=per_class,
                                      temperature=self.temperature, generator=torch.Generator().manual_seed(seed),
                                      batches=self.batches)
        self.numel = self.arena.numel
        # Every batch drawn and scored now, in order: batch k is the same whichever step first asks for it
        # (resumable); its SNIP, GraSP, loss and gtg come from one pass (PanningIndices.loss_gtg).
        self._dense = [self.indices.loss_gtg(k) for k in range(self.batches)]
        self._lowered = lowered.supports(model, self.arena, self.indices.input_shape)
        self._start_ranges = self._initial_ranges()
        self._first = self.indices(0, torch.ones(self.numel, dtype=torch.bool, device=self.arena.device))
        self.restart(seed)

    # -- state ------------------------------------------------------------------------------------
    def restart(self, seed: int | None) -> None:
        """Back to the state of a fresh environment: ranges, curriculum position, random stream, lanes."""
        self.rng = np.random.default_rng(seed)
        self.loss_range, self.gtg_range = (RunningRange(r.low, r.high) for r in self._start_ranges)
        self.total_steps = 0
        self.sparsity = np.zeros(self.lanes)
        self.counts = torch.zeros((self.lanes, self.iterations), dtype=torch.int64)
        self.scheduled = np.zeros((self.lanes, self.iterations))
        self.step_index = np.zeros(self.lanes, dtype=np.int64)
        self.masks = torch.ones((self.lanes, self.numel), dtype=torch.bool, device=self.arena.device)
        self.stacks = [self._first] * self.lanes
        self.started = np.zeros(self.lanes, dtype=bool)

    def reset_lane(self, lane: int, sparsity: float | None = None) -> tuple[np.ndarray, float]:
        """Start lane `lane` at the dense network with `sparsity` (else the curriculum's draw)."""
        if sparsity is None:
            sparsity = self.curriculum.draw(self.rng, self.total_steps)
        self.sparsity[lane] = sparsity
        self._schedule(lane)
        self.step_index[lane] = 0
        self.masks[lane] = True
        self.stacks[lane] = self._first
        self.started[lane] = True
        loss, gtg = self._dense[0]
        observation = np.zeros(OBSERVATION_SIZE, dtype=np.float32)
        observation[:2] = self.loss_range.position(loss), self.gtg_range.position(gtg)
        return np.clip(observation, 0.0, 1.0), float(sparsity)

    def _schedule(self, lane: int) -> None:
        """Lane `lane`'s kept count and scheduled sparsity at every step, from its target sparsity."""
        plan = schedule(self.numel, float(self.sparsity[lane]), self.iterations)
        self.counts[lane] = torch.tensor(plan.counts)
        self.scheduled[lane] = plan.sparsities

    # -- the batched step -------------------------------------------------------------------------
    def step(self, actions: np.ndarray):
        """Advance every lane by one Panning step with its action; returns (observations (B, 7), rewards (B,),
        terminated (B,), infos). Every lane must be mid-episode."""
        if not self.started.all() or (self.step_index >= self.iterations).any():
            raise RuntimeError("step: call reset() first; the episode has ended")
        actions = np.clip(np.asarray(actions, dtype=np.float64).reshape(self.lanes, 3), -1.0, 1.0)
        steps = self.step_index.copy()
        k = self.counts[torch.arange(self.lanes), torch.as_tensor(steps)]
        self.masks = self._masks(actions + 1.0, steps, k)
        n = self.iterations
        flows = self._flows()
        self.stacks = [self.indices(min(int(e) + 1, n - 1), mask, flow)
                       for e, mask, flow in zip(steps, self.masks, flows)]
        flow_sparsity = [1.0 - int(flow.flowing().sum()) / self.numel for flow in flows]
        sub_loss, sub_gtg = self._masked_loss_gtg(steps)
        observations = np.zeros((self.lanes, OBSERVATION_SIZE), dtype=np.float32)
        rewards, terminated, infos = np.zeros(self.lanes), np.zeros(self.lanes, dtype=bool), []
        for b, e in enumerate(steps.tolist()):
            loss, gtg = self._dense[e % self.batches]
            for value_range, values in ((self.loss_range, (loss, sub_loss[b])), (self.gtg_range, (gtg, sub_gtg[b]))):
                for value in values:
                    value_range.add(value)
            d_loss = self.loss_range.distance(sub_loss[b], loss)
            d_gtg = self.gtg_range.distance(sub_gtg[b], gtg) / GRADNORM_DIVISOR
            scheduled = float(self.scheduled[b, e])
            reward = -SPARSITY_PENALTY * abs(scheduled - flow_sparsity[b]) - d_loss - d_gtg
            dead = flow_sparsity[b] >= 1.0
            if dead:
                reward -= (1.0 - e / n) * n
            observations[b] = (self.loss_range.position(loss), self.gtg_range.position(gtg), d_loss, d_gtg,
                               flow_sparsity[b], scheduled, e / n)
            rewards[b], terminated[b] = reward, dead or e + 1 == n
            infos.append({"sparsity": scheduled, "flow_sparsity": flow_sparsity[b], "dead": dead, "d_loss": d_loss,
                          "d_gradnorm": d_gtg, "target": float(self.sparsity[b])})
        self.step_index = steps + 1
        self.total_steps += self.lanes
        return np.clip(observations, 0.0, 1.0), rewards, terminated, infos

    def _masks(self, weights: np.ndarray, steps: np.ndarray, k: torch.Tensor) -> torch.Tensor:
        """The lanes' new masks: one saliency call over [lane SynFlow rows; distinct SNIP/GraSP rows], one top-k."""
        keys = sorted({int(e) % self.batches for e in steps})
        first_lane = {key: next(b for b, e in enumerate(steps) if int(e) % self.batches == key) for key in keys}
        rows = [s[0] for s in self.stacks] + [r for key in keys for r in self.stacks[first_lane[key]][1:]]
        combine = torch.zeros((self.lanes, len(rows)), dtype=torch.float64)
        for b, e in enumerate(steps):
            j = self.lanes + 2 * keys.index(int(e) % self.batches)
            combine[b, b], combine[b, j], combine[b, j + 1] = (float(w) for w in weights[b])
        scores = ops.saliency(torch.stack(rows), combine.to(self.arena.device))
        return ops.topk_mask(scores, k.view(-1, 1), offsets=[0, self.numel])

    def _flows(self) -> list[passes.Flow]:
        """The SynFlow pass of each lane's new mask: the lanes together where the network is a plain stack
        (panning.criteria.lanes: one GEMM per layer over the lanes), else one PanningIndices.flow per lane."""
        if self._lowered:
            return lowered.flows(self.model, self.arena, self.indices.input_shape, self.masks)
        return [self.indices.flow(mask) for mask in self.masks]

    def _initial_ranges(self) -> tuple[RunningRange, RunningRange]:
        ranges = RunningRange(), RunningRange()
        for loss, gtg in self._dense[:RANGE_WARMUP]:
            ranges[0].add(loss)
            ranges[1].add(gtg)
        return ranges

    def _masked_loss_gtg(self, steps: np.ndarray) -> tuple[list[float], list[float]]:
        """Loss and squared gradient norm (over every prunable weight, as the authors count it) of each lane's
        masked network on the batch of its step, through torch.func.functional_call: no copy of the model.

        One call per lane: measured on cnn1d (width 4, 8 lanes, 1 thread) torch.func.vmap over the lanes took
        1.5x the loop (conv1d's batching rule over per-lane weights is slower than the plain convolutions)."""
        flat = self.arena.weights.detach() * self.masks
        losses, gtgs = [], []
        for weights, e in zip(flat, steps):
            loss, grad = loss_grad(self.model, self.arena, weights, self.indices.batch(int(e)),
                                   temperature=self.temperature)
            losses.append(float(loss))
            gtgs.append(float(grad.double().square().sum()))
        return losses, gtgs

    # -- checkpointing ----------------------------------------------------------------------------
    def settings(self) -> dict:
        """What this environment was made with that changes what an agent learns on it (JSON-able): a run resumed
        from a checkpoint must have the same."""
        curriculum = json.loads(json.dumps(dataclasses.asdict(self.curriculum)))
        return {"lanes": self.lanes, "iterations": self.iterations, "per_class": self.indices.per_class,
                "batches": self.batches, "temperature": self.temperature,
                **{f"curriculum_{key}": value for key, value in curriculum.items()}}

    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-able values, tensors) that restore the environment exactly with load_state."""
        values = {"rng": self.rng.bit_generator.state, "loss_range": [self.loss_range.low, self.loss_range.high],
                  "gtg_range": [self.gtg_range.low, self.gtg_range.high], "total_steps": self.total_steps,
                  "sparsity": self.sparsity.tolist(), "step_index": self.step_index.tolist(),
                  "started": self.started.tolist()}
        return values, {"env.masks": self.masks.cpu()}

    def load_state(self, values: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.rng.bit_generator.state = values["rng"]
        self.loss_range, self.gtg_range = RunningRange(*values["loss_range"]), RunningRange(*values["gtg_range"])
        self.total_steps = int(values["total_steps"])
        self.sparsity = np.asarray(values["sparsity"], dtype=np.float64)
        self.step_index = np.asarray(values["step_index"], dtype=np.int64)
        self.started = np.asarray(values["started"], dtype=bool)
        self.masks = tensors["env.masks"].to(self.arena.device)
        for lane in np.flatnonzero(self.started):
            self._schedule(int(lane))
        self.stacks = [self._first if e == 0 else self.indices(int(e), mask) for e, mask in
                       zip(self.step_index, self.masks)]


class PanningEnv(gym.Env):
    """Panning with agent-chosen index weights (gymnasium, one episode at a time). `mask` is the flat mask after
    the last step. A seeded reset restarts everything (ranges, curriculum), so equal seeds give equal episodes."""

    metadata = {"render_modes": []}

    def __init__(self, model: nn.Module, dataset: Dataset, input_shape, *, iterations: int = 100,
                 per_class: int = 10, temperature: float = criteria.TEMPERATURE, batches: int | None = None,
                 seed: int = 0, arena: Arena | None = None, curriculum: Curriculum | None = None):
        super().__init__()
        self.core = PanningLanes(model, dataset, input_shape, 1, iterations=iterations, per_class=per_class,
                                 temperature=temperature, batches=batches, seed=seed, arena=arena,
                                 curriculum=curriculum)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(OBSERVATION_SIZE,), dtype=np.float32)

    model = property(lambda self: self.core.model)
    arena = property(lambda self: self.core.arena)
    iterations = property(lambda self: self.core.iterations)
    mask = property(lambda self: self.core.masks[0])
    step_index = property(lambda self: int(self.core.step_index[0]))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode at the dense network; options={"sparsity": s} fixes the target sparsity."""
        super().reset(seed=seed)
        if seed is not None:
            self.core.restart(seed)
        sparsity = sparsity_option(options)
        observation, sparsity = self.core.reset_lane(0, sparsity)
        return observation, {"sparsity": sparsity}

    def step(self, action):
        observations, rewards, terminated, infos = self.core.step(np.asarray(action).reshape(1, 3))
        return observations[0], float(rewards[0]), bool(terminated[0]), False, infos[0]


def sparsity_option(options: dict | None) -> float | None:
    """The target sparsity `reset(options=...)` fixes (None: the curriculum draws it), checked."""
    options = options or {}
    sparsity = options.get("sparsity")
    number = isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool)
    if set(options) - {"sparsity"} or not (sparsity is None or number and 0.0 <= sparsity <= 1.0):
        raise ValueError(f"options: expected no keys or 'sparsity' alone, a number in [0, 1]; got {options!r}")
    return None if sparsity is None else float(sparsity)
