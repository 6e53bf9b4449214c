"""Training steps and inference latency of pruned networks under pytest-benchmark (docs/benchmarks.md).

A training step is zero_grad, forward, loss, backward and an SGD (momentum 0.9, weight decay 5e-4) step. Networks:
`linear` (one Linear 768 -> 3072, batch 256, MSE loss), VGG-19-BN and ResNet-32 (panning.models, CIFAR-10 shape,
batch 32, cross-entropy). Each is pruned by global magnitude (panning.nn.global_prune, every Linear / Conv
weight) at 95, 98 and 99% and timed as

- dense: the unpruned network;
- masked / compressed / auto: `panning.sparsify(network, masks, mode=...)` (auto: what a user gets by default);
- sparseprop: SparseProp's `swap_modules_with_sparse` on the pruned network, where the `sparseprop` package is
  installed (the `bench` extra); it keeps a layer dense where it measures that faster.

Inference latency: the network in eval mode at batch 1 under torch.no_grad. The thread count comes from
PANNING_BENCH_THREADS (bench/conftest.py); `python -m bench.train_step` runs this suite per thread count and writes
bench/results/train-step.md. PANNING_BENCH_QUICK=1 keeps only the linear network and 98%.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from panning import models
from panning.nn import global_prune, sparsify

QUICK = os.environ.get("PANNING_BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("PANNING_BENCH_ROUNDS", "3"))
NETWORKS = ("linear",) if QUICK else ("linear", "vgg19_bn", "resnet32")
SPARSITIES = (0.98,) if QUICK else (0.95, 0.98, 0.99)
try:
    from sparseprop.utils import swap_modules_with_sparse
except ImportError:  # not installed: the variant is left out
    swap_modules_with_sparse = None
VARIANTS = ("dense", "masked", "compressed", "auto") + (("sparseprop",) if swap_modules_with_sparse else ())


@dataclass(frozen=True)
class Network:
    """A network with its batch and loss."""

    build: object
    batch: int
    input_shape: tuple[int, ...]
    loss: object
    target: object


def network(name: str) -> Network:
    if name == "linear":
        return Network(lambda: nn.Linear(768, 3072), 256, (768,), nn.functional.mse_loss,
                       lambda g, n: torch.randn(n, 3072, generator=g))
    return Network(lambda: models.build(name, (3, 32, 32), 10), 32, (3, 32, 32), nn.functional.cross_entropy,
                   lambda g, n: torch.randint(0, 10, (n,), generator=g))


def build(name: str, sparsity: float, variant: str) -> tuple[nn.Module, Network]:
    spec = network(name)
    torch.manual_seed(0)
    model = spec.build()
    if variant == "dense":
        return model, spec
    masks = global_prune(model, sparsity)
    if variant == "sparseprop":
        masks.apply(model)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per layer
            model = swap_modules_with_sparse(model, (spec.batch, *spec.input_shape), inplace=True)
        return model, spec
    return sparsify(model, masks, mode=variant), spec


def step(model: nn.Module, spec: Network):
    g = torch.Generator().manual_seed(1)
    x, target = torch.randn(spec.batch, *spec.input_shape, generator=g), spec.target(g, spec.batch)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train()

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        spec.loss(model(x), target).backward()
        opt.step()
    return run


def latency(model: nn.Module, spec: Network):
    x = torch.randn(1, *spec.input_shape, generator=torch.Generator().manual_seed(2))
    model.eval()

    def run() -> None:
        with torch.no_grad():
            model(x)
    return run


CASES = [(name, sparsity, variant) for name in NETWORKS for sparsity in SPARSITIES for variant in VARIANTS]


@pytest.mark.parametrize("kind", ["step", "latency"])
@pytest.mark.parametrize("name,sparsity,variant", CASES, ids=[f"{n} {s} {v}" for n, s, v in CASES])
def test_train_step(benchmark, kind, name, sparsity, variant):
    model, spec = build(name, sparsity, variant)
    benchmark.group = f"{kind} | {name} | {sparsity}"
    paths = sorted({m.path_detail for m in model.modules() if hasattr(m, "path_detail")})
    benchmark.extra_info.update(kind=kind, network=name, sparsity=sparsity, variant=variant, paths=paths)
    benchmark.pedantic((step if kind == "step" else latency)(model, spec), rounds=ROUNDS, warmup_rounds=1,
                       iterations=1)
