"""The panning agent's environment and update, timed (pytest-benchmark; see docs/agent.md):

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/bench_env.py --benchmark-enable --benchmark-columns=mean,min

- transitions per second of the batched environment for B = 1, 4, 8, 16 lanes (cnn1d width 4, MNIST-1D,
  100 Panning steps, cached batches);
- one environment step: ours warm (cached batches: every batch's SNIP, GraSP, loss and gtg computed when the
  environment is made), ours afresh (the step plus a fresh batch's SNIP, GraSP, loss and gtg from one forward and
  one double backward), and a straightforward implementation of the same step written here (one forward and one double
  backward for SNIP, GraSP and the dense loss, float32 SynFlow on a copy of the network, `torch.topk` for the
  mask, the masked loss on a masked copy, effective sparsity from the SynFlow gradient: the authors' recipe);
- TD3 updates (batch 256, 256-256 networks), one per call and eight per call, against the FLOP floor at this
  machine's one-thread GEMM rate (best of runs: the machine is shared), and on 1 against 2 torch threads.
Each benchmark stores its derived numbers in `extra_info`.
"""
from __future__ import annotations

import copy
import itertools
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stable_baselines3.common.logger import configure

from panning import data, models
from panning.data import class_balanced_batch
from panning.pbt.panning import PanningIndices
from panning.pbt.rl.agent import make_agent
from panning.pbt.rl.env import Curriculum, PanningLanes
from panning.pbt.rl.vec_env import PanningVecEnv
from panning.timing import interleaved

WIDTH = 4.0
ITERATIONS = 100
T = 200.0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle():
    return data.load("mnist1d")


def network(bundle, width=WIDTH):
    torch.manual_seed(0)
    return models.build("cnn1d", bundle.input_shape, bundle.num_classes, width=width)


def lanes(bundle, count, batches=10):
    core = PanningLanes(network(bundle), bundle.train, bundle.input_shape, count, iterations=ITERATIONS,
                        batches=batches, curriculum=Curriculum.fixed(0.98, 0.98))
    for b in range(count):
        core.reset_lane(b)
    return core


def stepper(core, seed=0):
    """One batched step with random actions; lanes restart when their episodes end."""
    rng = np.random.default_rng(seed)

    def step():
        if core.step_index[0] >= core.iterations:
            for b in range(core.lanes):
                core.reset_lane(b)
        core.step(rng.uniform(-1, 1, (core.lanes, 3)))

    return step


@pytest.mark.parametrize("count", [1, 4, 8, 16])
def test_transitions_per_second(benchmark, bundle, count):
    step = stepper(lanes(bundle, count))
    for _ in range(3):
        step()
    benchmark.pedantic(step, rounds=max(4, 32 // count), iterations=1)
    benchmark.extra_info["transitions_per_second"] = count / benchmark.stats.stats.mean


def test_transitions_interleaved(benchmark, bundle):
    """B = 1, 4, 8, 16 stepped round-robin (same load for all); extra_info: median transitions/s and the ratio
    of each B to B = 1."""
    steppers = {count: stepper(lanes(bundle, count)) for count in (1, 4, 8, 16)}
    times = benchmark.pedantic(interleaved, args=(steppers, 8), rounds=1, iterations=1)
    rate = {count: count / float(np.median(t)) for count, t in times.items()}
    benchmark.extra_info.update({f"B{count}_per_s": r for count, r in rate.items()})
    benchmark.extra_info.update({f"B{count}_vs_B1": r / rate[1] for count, r in rate.items()})


def test_env_step_warm(benchmark, bundle):
    step = stepper(lanes(bundle, 1))
    step()
    benchmark.pedantic(step, rounds=20, iterations=1)


def afresh(core, bundle):
    """Our step computed afresh, as the authors' environment does every step: a fresh batch's SNIP, GraSP, loss and
    gtg (one forward + double backward, PanningIndices with a new batch per step), then the warm step."""
    fresh = PanningIndices(core.model, core.arena, bundle.train, bundle.input_shape, temperature=T,
                           generator=torch.Generator().manual_seed(1))
    warm, steps = stepper(core), itertools.count()

    def step():
        fresh.loss_gtg(next(steps))
        warm()

    return step


def test_env_step_afresh(benchmark, bundle):
    step = afresh(lanes(bundle, 1), bundle)
    step()
    benchmark.pedantic(step, rounds=10, iterations=1)


class Straightforward:
    """One step of the panning environment written the plain way (the authors' recipe, see module docstring)."""

    def __init__(self, model, dataset, input_shape, sparsity=0.98):
        self.model, self.dataset = model, dataset
        self.layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
        self.weights0 = [m.weight.detach().clone() for m in self.layers]
        self.masks = [torch.ones_like(w) for w in self.weights0]
        self.ones = torch.ones((1, *input_shape))
        self.generator = torch.Generator().manual_seed(0)
        self.numel = sum(w.numel() for w in self.weights0)
        self.sparsity, self.e = sparsity, 0
        self.synflow = self._synflow()

    def batch(self):
        return class_balanced_batch(self.dataset, 10, generator=self.generator)

    def _synflow(self):
        net = copy.deepcopy(self.model).eval()
        layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
        with torch.no_grad():
            for layer, w, m in zip(layers, self.weights0, self.masks):
                layer.weight.copy_((w * m).abs())
                if layer.bias is not None:
                    layer.bias.abs_()
        net.zero_grad()
        net(self.ones).sum().backward()
        return [w * layer.weight.grad for layer, w in zip(layers, self.weights0)], \
               [(layer.weight * layer.weight.grad != 0) for layer in layers]

    @staticmethod
    def normalized(scores):
        flat = torch.cat([s.flatten() for s in scores])
        return (flat - flat.mean()).abs() / flat.std()

    def masked_loss_gtg(self, x, y, masks):
        net = copy.deepcopy(self.model).train()
        layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
        with torch.no_grad():
            for layer, m in zip(layers, masks):
                layer.weight.mul_(m)
        loss = F.cross_entropy(net(x) / T, y)
        grads = torch.autograd.grad(loss, [layer.weight for layer in layers])
        return float(loss), float(sum(g.square().sum() for g in grads))

    def step(self, action):
        x, y = self.batch()
        params = [m.weight for m in self.layers]
        loss = F.cross_entropy(self.model(x) / T, y)
        g = torch.autograd.grad(loss, params, create_graph=True)
        gtg = sum(gi.square().sum() for gi in g)
        hg = torch.autograd.grad(gtg, params)
        synflow, _ = self.synflow
        indices = [self.normalized(synflow), self.normalized([w * gi.detach() for w, gi in zip(self.weights0, g)]),
                   self.normalized([w * h for w, h in zip(self.weights0, hg)])]
        score = sum((float(a) + 1) * s for a, s in zip(action, indices))
        keep = round(self.numel * (1 - self.sparsity) ** ((self.e % ITERATIONS + 1) / ITERATIONS))
        flat = torch.zeros(self.numel, dtype=torch.bool)
        flat[torch.topk(score, keep).indices] = True
        self.masks = list(flat.split([w.numel() for w in self.weights0]))
        self.masks = [m.view_as(w).float() for m, w in zip(self.masks, self.weights0)]
        self.synflow = self._synflow()
        effective = 1 - sum(int(t.sum()) for t in self.synflow[1]) / self.numel
        self.masked_loss_gtg(x, y, self.masks)
        self.e += 1
        return effective, float(loss), float(gtg)


def test_env_step_straightforward(benchmark, bundle):
    plain = Straightforward(network(bundle), bundle.train, bundle.input_shape)
    rng = np.random.default_rng(0)
    plain.step(rng.uniform(-1, 1, 3))
    benchmark.pedantic(lambda: plain.step(rng.uniform(-1, 1, 3)), rounds=10, iterations=1)


def test_env_step_ratios(benchmark, bundle):
    """The three step variants interleaved round by round (the machine is shared: consecutive benchmarks see
    different loads); extra_info has the straightforward step's median time over ours, warm and afresh."""
    warm, fresh = stepper(lanes(bundle, 1)), afresh(lanes(bundle, 1), bundle)
    plain = Straightforward(network(bundle), bundle.train, bundle.input_shape)
    rng = np.random.default_rng(0)
    variants = {"warm": warm, "afresh": fresh, "straightforward": lambda: plain.step(rng.uniform(-1, 1, 3))}
    times = benchmark.pedantic(interleaved, args=(variants, 10), rounds=1, iterations=1)
    median = {name: float(np.median(t)) for name, t in times.items()}
    benchmark.extra_info.update({f"{name}_ms": 1e3 * m for name, m in median.items()})
    benchmark.extra_info["speedup_warm"] = median["straightforward"] / median["warm"]
    benchmark.extra_info["speedup_afresh"] = median["straightforward"] / median["afresh"]


def gemm_rate() -> float:
    """FLOP/s of a 256 x 256 by 256 x 256 float32 matmul on one thread (best of 20)."""
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * 256 ** 3 / best


def td3_update_flops(batch=256, obs=7, act=3, hidden=256) -> float:
    """Forward+backward FLOPs of one TD3 update: critic targets (actor target + twin critic targets, forward
    only), twin critics (forward + backward), and every second update the actor through one critic."""
    def mlp(inputs, outputs):
        return 2 * batch * (inputs * hidden + hidden * hidden + hidden * outputs)

    critic, actor = mlp(obs + act, 1), mlp(obs, act)
    per_update = actor + 2 * critic + 3 * 2 * critic  # targets (forward) + twin critics (forward + 2x backward)
    actor_step = 3 * (actor + critic)                 # actor through Q1, forward + backward, every second update
    return per_update + actor_step / 2


def td3_agent(bundle):
    """A TD3 agent with the authors' settings and 1,000 random transitions in its buffer, ready to update."""
    env = PanningVecEnv(network(bundle, width=1.0), bundle.train, bundle.input_shape, 1, iterations=10, batches=2)
    agent = make_agent(env, learning_starts=0)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        obs = rng.uniform(0, 1, (1, 7)).astype(np.float32)
        agent.replay_buffer.add(obs, obs, rng.uniform(-1, 1, (1, 3)).astype(np.float32), np.array([-1.0]),
                                np.array([False]), [{}])
    agent._logger = configure(None, [""])
    return agent


@pytest.mark.parametrize("gradient_steps", [1, 8])
def test_td3_update(benchmark, bundle, gradient_steps):
    """One `train` call of `gradient_steps` updates (8: what one vectorized step of 8 lanes triggers with
    gradient_steps=-1); extra_info has the time per update and its ratio to the FLOP floor."""
    agent = td3_agent(bundle)
    benchmark.pedantic(lambda: agent.train(gradient_steps=gradient_steps, batch_size=256),
                       rounds=max(6, 48 // gradient_steps), iterations=1, warmup_rounds=2)
    floor = td3_update_flops() / gemm_rate()
    per_update = benchmark.stats.stats.min / gradient_steps
    benchmark.extra_info.update(floor_ms=1e3 * floor, per_update_ms=1e3 * per_update, ratio_to_floor=per_update / floor)


def test_td3_update_threads(benchmark, bundle):
    """The learner's update (8 per call) on 1 and 2 torch threads, interleaved call by call; extra_info has the
    median ms per update of each and the 2-thread time over the 1-thread time."""
    agent = td3_agent(bundle)

    def on(threads):
        def update():
            torch.set_num_threads(threads)
            agent.train(gradient_steps=8, batch_size=256)
        return update

    times = benchmark.pedantic(interleaved, args=({1: on(1), 2: on(2)}, 8), rounds=1, iterations=1)
    torch.set_num_threads(1)
    median = {threads: float(np.median(t)) / 8 for threads, t in times.items()}
    benchmark.extra_info.update(ms_1_thread=1e3 * median[1], ms_2_threads=1e3 * median[2],
                                two_over_one=median[2] / median[1])
