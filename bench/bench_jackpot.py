"""Cost of one jackpot search step against one dense training step and against the plain algorithm.

For each network, on the same batch:
  dense   one ordinary training step: forward, backward, SGD (momentum, weight decay) on all parameters;
  search  one panning.jackpot.Searcher step (restriction none, then short): straight-through forward through
          the panning.nn sparse layers with scores, backward into the scores, SGD on the scores, ONE segmented
          ops.topk_mask over all layers;
  plain   the same algorithm written the straightforward way: a score tensor per layer, W * M materialized
          for every layer (Linear too), and a full sort per layer per step to rebuild the mask.
Design target (docs/benchmarks.md): search <= 1.3x dense.

    PYTHONPATH=. python bench/bench_jackpot.py [--repeats 20] [--networks cnn1d cnn2d vgg19_bn]
"""
from __future__ import annotations

import argparse
import copy
import platform

import torch
from torch import nn
from torch.nn import functional as F

from panning import ops
from panning.arena import Arena, except_last
from panning.jackpot import Searcher, SearchSpace, initial_scores
from panning.models import build
from panning.sparsity import layer_budgets
from panning.timing import interleaved, summary

# name -> (model, input shape, classes, width, batch)
NETWORKS = {
    "cnn1d": ("cnn1d", (1, 40), 10, 1.0, 256),  # MNIST-1D
    "cnn2d": ("cnn2d", (1, 8, 8), 10, 1.0, 256),  # digits
    "mlp-wide": ("mlp", (1, 40), 10, 10.24, 256),  # 2 hidden layers of 1024: Linear-dominated
    "vgg19_bn": ("vgg19_bn", (3, 32, 32), 10, 0.25, 32),  # CIFAR shape, narrow
}
SPARSITY = 0.9


def timed(steps: dict, repeats: int, warmup: int = 2) -> dict[str, tuple[float, float]]:
    """(min, median) seconds per call of every step function, interleaved round by round so that a change
    in machine load hits every variant alike (the machine is shared: the minimum is the robust figure)."""
    return summary(interleaved(steps, repeats, warmup))


def dense_step(model: nn.Module, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def search_step(model: nn.Module, x, y, restriction: str, total: int):
    """(one search step, the step's segmented top-k alone) over a fresh SearchSpace of `model`."""
    space = SearchSpace(model, except_last(model))
    k = layer_budgets(space.arena, SPARSITY)
    space.set_scores(initial_scores(space.arena, k, "magnitude"))
    space.set_mask(ops.topk_mask(space.scores, k, offsets=space.arena.offsets))
    searcher = Searcher(space, k, total_steps=total, restriction=restriction)
    model.train()
    return (lambda: searcher.step(x, y)), (lambda: ops.topk_mask(space.scores, k, offsets=space.arena.offsets))


def plain_step(model: nn.Module, x, y):
    """The straightforward version: per-layer scores, a sort per layer per step, W * M materialized."""
    arena = Arena(model, include=except_last(model), share=False)
    k = layer_budgets(arena, SPARSITY).tolist()  # the same budgets, computed once
    for p in model.parameters():
        p.requires_grad_(False)
    names, weights = arena.names, arena.params
    scores = [nn.Parameter(w.detach().abs().clone()) for w in weights]
    masks = [torch.zeros_like(w) for w in weights]

    def refresh():
        with torch.no_grad():
            for s, m, kk in zip(scores, masks, k):
                order = torch.sort(s.reshape(-1), descending=True).indices
                m.zero_().view(-1)[order[:kk]] = 1.0

    refresh()
    opt = torch.optim.SGD(scores, lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        # W * M materialized for every layer, straight-through into the scores.
        effective = {n: w * (m + (s - s.detach())) for n, w, s, m in zip(names, weights, scores, masks)}
        loss = F.cross_entropy(torch.func.functional_call(model, effective, (x,), strict=False), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        refresh()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    backend = ops.dispatch.resolve("topk_mask", torch.device("cpu"))
    print(f"jackpot step bench: CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, topk_mask backend {backend!r}, masked_linear backend "
          f"{ops.dispatch.resolve('masked_linear_fwd', torch.device('cpu'))!r}, sparsity {SPARSITY}")
    print("min over interleaved repeats (median in parentheses); ratios of the minima; 'top-k' is the step's "
          "segmented ops.topk_mask alone, 'search-topk' the rest of the search step")
    header = (f"{'network':<9} {'weights':>8} {'batch':>5} {'dense ms':>15} {'search ms':>15} {'+short ms':>15} "
              f"{'plain ms':>15} {'top-k ms':>13} {'search/dense':>12} {'+short/dense':>12} {'plain/dense':>11} "
              f"{'plain/search':>12} {'(search-topk)/dense':>19}")
    print(header)
    for name in args.networks:
        arch, shape, classes, width, batch = NETWORKS[name]
        torch.manual_seed(0)
        base = build(arch, shape, classes, width=width)
        x = torch.randn(batch, *shape)
        y = torch.randint(0, classes, (batch,))
        total = 10_000  # schedule length: r_t stays near 1, as early in a search
        search, topk = search_step(copy.deepcopy(base), x, y, "none", total)
        short, _ = search_step(copy.deepcopy(base), x, y, "short", total)
        result = timed({"dense": dense_step(copy.deepcopy(base), x, y), "search": search, "short": short,
                        "plain": plain_step(copy.deepcopy(base), x, y), "topk": topk}, args.repeats)
        n = sum(m.weight.numel() for m in base.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)))
        ms = {key: f"{1e3 * lo:.2f} ({1e3 * mid:.1f})" for key, (lo, mid) in result.items()}
        lo = {key: v[0] for key, v in result.items()}
        print(f"{name:<9} {n:>8} {batch:>5} {ms['dense']:>15} {ms['search']:>15} {ms['short']:>15} "
              f"{ms['plain']:>15} {ms['topk']:>13} {lo['search'] / lo['dense']:>12.2f} "
              f"{lo['short'] / lo['dense']:>12.2f} {lo['plain'] / lo['dense']:>11.2f} "
              f"{lo['plain'] / lo['search']:>12.2f} {(lo['search'] - lo['topk']) / lo['dense']:>19.2f}")


if __name__ == "__main__":
    main()
