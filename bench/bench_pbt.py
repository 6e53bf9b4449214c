"""One hand-scheduled Panning step: panning's against a straightforward implementation of the same step.

Both take step e of a 100-step run to 95% with a fresh class-balanced batch (10 per class) and the mask of
the previous step, on the same network and weights, 1 thread:
  panning          PanningScorer + global_mask: SNIP and GraSP indices from one forward + one double
                   backward (panning.criteria.passes), float32 SynFlow, one saliency and one top-k call;
  straightforward  written here as a user would: the model's own parameters, one forward + double backward,
                   a float32 |w| * m copy for SynFlow, |x - mean| / std per index, torch.topk for the mask.
Target (docs/benchmarks.md, issue 18): panning >= 2x straightforward on the 65K-weight networks.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/bench_pbt.py --benchmark-only     # pytest-benchmark groups
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_pbt.py --repeats 30                    # interleaved ratios
"""
from __future__ import annotations

import argparse
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panning import data, models
from panning.adapter import LAYERS
from panning.arena import Arena
from panning.data import class_balanced_batch
from panning.pbt import PanningIndices, PanningScorer, index_weights
from panning.sparsity import global_mask, schedule
from panning.timing import interleaved, summary

torch.set_num_threads(1)

#: name -> (data set, model, width): cnn1d width 1 (5K weights), width 4 and cnn2d (65K weights each).
NETWORKS = {"cnn1d-w1": ("mnist1d", "cnn1d", 1.0), "cnn1d-w4": ("mnist1d", "cnn1d", 4.0),
            "cnn2d": ("digits", "cnn2d", 1.0)}
SPARSITY, STEPS, PER_CLASS = 0.95, 100, 10


def setup(network: str):
    name, model_name, width = NETWORKS[network]
    bundle = data.load(name)
    torch.manual_seed(0)
    return models.build(model_name, bundle.input_shape, bundle.num_classes, width=width), bundle


def panning_step(model: nn.Module, bundle):
    """Our step, as the pruning loop runs it: scorer then one global top-k."""
    arena = Arena(model, share=False)
    indices = PanningIndices(model, arena, bundle.train, bundle.input_shape, per_class=PER_CLASS,
                             generator=torch.Generator().manual_seed(0))
    scorer = PanningScorer(indices)
    plan = schedule(arena.numel, SPARSITY, STEPS)
    state = {"e": 0, "mask": torch.ones(arena.numel, dtype=torch.bool)}

    def step():
        e = state["e"] % STEPS
        state["mask"] = global_mask(scorer(e, state["mask"], plan.sparsities[e]), plan.counts[e])
        state["e"] += 1
    return step


def straightforward_step(model: nn.Module, bundle):
    """The same step written the plain way (what the authors' code does per step)."""
    dense = copy.deepcopy(model).train()
    flow_net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for t in flow_net.state_dict().values():
            t.abs_()
    params = [m.weight for m in dense.modules() if isinstance(m, LAYERS)]
    flow_layers = [m for m in flow_net.modules() if isinstance(m, LAYERS)]
    init = [p.detach().clone() for p in params]
    ones = torch.ones(1, *bundle.input_shape)
    generator = torch.Generator().manual_seed(0)
    state = {"e": 0, "masks": [torch.ones_like(w) for w in init]}

    def normalized(parts):
        flat = torch.cat([p.flatten() for p in parts])
        return (flat - flat.mean()).abs() / flat.std()

    def step():
        e = state["e"] % STEPS
        keep = (1 - SPARSITY) ** ((e + 1) / STEPS)
        x, y = class_balanced_batch(bundle.train, PER_CLASS, generator=generator)
        grads = torch.autograd.grad(F.cross_entropy(dense(x) / 200, y), params, create_graph=True)
        hg = torch.autograd.grad(sum((g * g).sum() for g in grads), params)
        with torch.no_grad():
            for layer, w, m in zip(flow_layers, init, state["masks"]):
                layer.weight.copy_((w * m).abs())
        flow_net.zero_grad()
        flow_net(ones).sum().backward()
        a = index_weights(1 - keep)
        score = (a[0] * normalized([w * layer.weight.grad for w, layer in zip(init, flow_layers)])
                 + a[1] * normalized([w * g.detach() for w, g in zip(init, grads)])
                 + a[2] * normalized([w * h for w, h in zip(init, hg)]))
        threshold = torch.topk(score, int(score.numel() * keep)).values[-1]
        flat = score >= threshold
        state["masks"] = [m.view_as(w).float() for m, w in zip(flat.split([w.numel() for w in init]), init)]
        state["e"] += 1
    return step


VARIANTS = {"panning": panning_step, "straightforward": straightforward_step}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("network", list(NETWORKS))
def test_panning_step(benchmark, network, variant):
    benchmark.group = f"panning step {network}"
    step = VARIANTS[variant](*setup(network))
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)


def compare(repeats: int) -> None:
    """Median and minimum seconds per step of both variants, alternated call by call, and their ratio."""
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    for network in NETWORKS:
        steps = {name: make(*setup(network)) for name, make in VARIANTS.items()}
        stats = summary(interleaved(steps, repeats, warmup=2))
        low, med = ({name: s[i] for name, s in stats.items()} for i in (0, 1))
        print(f"{network}: panning {1e3 * med['panning']:.1f} ms, straightforward {1e3 * med['straightforward']:.1f} ms"
              f" (median); speed-up {med['straightforward'] / med['panning']:.2f}x median, "
              f"{low['straightforward'] / low['panning']:.2f}x min")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    compare(parser.parse_args().repeats)
