"""Training step of a sparsified MLP against the same model dense and against torch.nn.utils.prune.

One step = zero_grad, forward, MSE loss, backward, SGD (momentum) step on a batch. Compared at each sparsity:
- dense: the plain torch model (the same for every sparsity);
- torch.prune: prune.global_unstructured (L1) and training through its forward pre-hook (weight_orig * mask);
- panning masked / compressed: panning.sparsify(model, panning global_prune masks, mode=...);
- panning auto: what a user gets by default (the path it picks is printed).

The masks of torch and panning are checked to agree (up to the order among tied |w|). The ops run on whatever
backend the dispatch picks (PANNING_BACKEND or --backend forces one), so the same command measures whichever
kernels are built.

    python bench/bench_layers.py                      # 4096-4096-4096, batch 256, 90/95/99%
    python bench/bench_layers.py --width 1024 --repeats 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from panning.arena import Arena
from panning.io import write_text
from panning.masks import Masks
from panning.nn import global_prune, sparsify
from panning.ops import dispatch
from panning.timing import interleaved


def mlp(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def torch_pruned(sparsity: float, width: int, depth: int) -> tuple[nn.Module, Masks]:
    model = mlp(width, depth)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    prune.global_unstructured([(m, "weight") for m in linears.values()], pruning_method=prune.L1Unstructured,
                              amount=sparsity)
    return model, Masks({f"{name}.weight": m.weight_mask.bool() for name, m in linears.items()})


def check_same_up_to_ties(dense: nn.Module, masks: Masks, torch_masks: Masks) -> None:
    """global_prune and torch keep the same number of weights of `dense` and differ only among weights whose |w|
    equals the threshold (torch breaks ties arbitrarily; a large float32 model has some)."""
    arena = Arena(dense, share=False)
    ours, theirs = masks.to_flat(arena), torch_masks.to_flat(arena)
    scores = arena.weights.abs()
    differ = ours != theirs
    threshold = scores[ours].min() if bool(ours.any()) else None
    if int(ours.sum()) != int(theirs.sum()) or (bool(differ.any()) and not bool((scores[differ] == threshold).all())):
        raise RuntimeError("global_prune and torch.nn.utils.prune disagree beyond ties")


class Trainer:
    """One model with its optimizer and a fixed batch; `step()` runs one training step."""

    def __init__(self, model: nn.Module, batch: int, width: int):
        g = torch.Generator().manual_seed(1)
        self.model = model
        self.x, self.target = torch.randn(batch, width, generator=g), torch.randn(batch, width, generator=g)
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        F.mse_loss(self.model(self.x), self.target).backward()
        self.opt.step()


def group(sparsity: float, shape: dict) -> dict[str, tuple[nn.Module, str]]:
    """variant -> (model, path) for one sparsity; torch's and panning's masks checked to agree."""
    pruned, torch_masks = torch_pruned(sparsity, **shape)
    masks = global_prune(mlp(**shape), sparsity)
    check_same_up_to_ties(mlp(**shape), masks, torch_masks)
    models = {"dense": (mlp(**shape), "dense"), "torch.prune": (pruned, "forward_pre_hook")}
    for mode in ("masked", "compressed", "auto"):
        model = sparsify(mlp(**shape), masks, mode=mode)
        models[f"panning {mode}"] = (model, model[0].path)
    return models


def run(args: argparse.Namespace) -> dict:
    """Per sparsity, the variants take turns step by step, so that load from other processes on a shared
    machine hits them alike; the dense model is measured again in every group."""
    shape = dict(width=args.width, depth=args.depth)
    rows = []
    for sparsity in args.sparsities:
        models = group(sparsity, shape)
        trainers = {variant: Trainer(model, args.batch, args.width) for variant, (model, _) in models.items()}
        times = interleaved({variant: trainer.step for variant, trainer in trainers.items()}, args.repeats,
                            args.warmup)
        for variant, ts in times.items():
            rows.append(dict(sparsity=sparsity, variant=variant, path=models[variant][1],
                             median_s=statistics.median(ts), min_s=min(ts), times_s=ts))
            print(f"  {sparsity:>5.2f} {variant:<20} median {statistics.median(ts) * 1e3:9.1f} ms", flush=True)
        del models, trainers
    return dict(
        benchmark="bench_layers: training step of a sparsified MLP",
        date=datetime.date.today().isoformat(),
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                     torch=torch.__version__, threads=torch.get_num_threads(),
                     load_average=os.getloadavg() if hasattr(os, "getloadavg") else None),
        backends={op: dispatch.resolve(op, torch.device("cpu"))
                  for op in ("masked_linear_fwd", "sparse_linear_fwd", "to_sparse")},
        config=dict(width=args.width, depth=args.depth, batch=args.batch, warmup=args.warmup,
                    repeats=args.repeats),
        rows=rows,
    )


def table(result: dict) -> str:
    """Speedups from the fastest step of each row (the least disturbed by other load on the machine): time of
    the reference in the same group / time of the row, > 1 when the row is faster."""
    best = {(r["sparsity"], r["variant"]): r["min_s"] for r in result["rows"]}
    lines = [f"{'sparsity':>8}  {'variant':<20} {'path':<17} {'median ms':>9} {'min ms':>9} {'vs dense':>9} "
             f"{'vs prune':>9}"]
    for r in result["rows"]:
        dense, hooks = best[(r["sparsity"], "dense")], best[(r["sparsity"], "torch.prune")]
        lines.append(f"{r['sparsity']:8.2f}  {r['variant']:<20} {r['path']:<17} {r['median_s'] * 1e3:9.1f} "
                     f"{r['min_s'] * 1e3:9.1f} {dense / r['min_s']:9.2f} {hooks / r['min_s']:9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=2, help="number of Linear layers (width x width each)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--backend", default=None, help="force a panning backend (sets PANNING_BACKEND)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.width < 1 or args.depth < 1 or args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("width, depth, batch and repeats must be positive; warmup non-negative")
    if not all(0.0 <= s <= 1.0 for s in args.sparsities):
        parser.error("sparsities must lie in [0, 1]")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backend:
        os.environ["PANNING_BACKEND"] = args.backend
    result = run(args)
    print(f"\nbackends: {result['backends']}; {result['config']}; load {result['machine']['load_average']}")
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
