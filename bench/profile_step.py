"""Where a training step of a pruned network spends its time: torch.profiler over the steps of
bench/test_train_step.py, the operators' own CPU time grouped by what they do.

    OMP_NUM_THREADS=1 python -m bench.profile_step [--network vgg19_bn] [--sparsity 0.98] [--variant compressed]

Groups: the sparse kernels (panning's compressed convolution and linear, forward and backward: their layout copies
are inside them), torch's dense convolutions and matmuls, batch norm, pooling, ReLU, the residual additions and
the rest of the elementwise work, the compressed layers' mirror sync (the scatter of the stepped values into the
weight), the optimizer step, and everything else (allocation, autograd bookkeeping). Prints ms per step and the
share of the profiled total; the Python between operators shows as the gap between the total and the wall time.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.test_train_step import build, step

GROUPS = (  # (group, substrings of operator names), first match wins
    ("sparse kernels", ("_EagerSparse", "panning::")),
    ("dense conv / matmul", ("convolution", "mkldnn", "addmm", "aten::mm", "aten::bmm", "linear")),
    ("batch norm", ("batch_norm",)),
    ("pooling", ("pool",)),
    ("ReLU", ("relu", "threshold", "clamp_min")),
    ("mirror sync", ("index_copy", "index_put", "index_select")),
    ("optimizer", ("Optimizer.", "_foreach", "aten::add_", "aten::mul_")),
    ("elementwise", ("aten::add", "aten::mul", "aten::sum", "aten::div", "aten::copy_", "aten::fill_", "aten::zero")),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="vgg19_bn")
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--variant", default="compressed")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, spec = build(args.network, args.sparsity, args.variant)
    run = step(model, spec)
    run()
    run()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            run()
    wall = (time.perf_counter() - start) / args.steps
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        group = next((g for g, keys in GROUPS if any(k in event.key for k in keys)), "other")
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total / 1e3 / args.steps
    profiled = sum(totals.values())
    print(f"{args.network} {args.sparsity:.0%} {args.variant}, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.2f}: {wall * 1e3:.1f} ms per step (wall, under the profiler), {profiled:.1f} ms "
          f"in operators")
    for group, ms in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {group:20s} {ms:8.1f} ms  {ms / profiled:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
