"""CPU benchmark of panning's compiled (cpp) kernels: top-k masks, saliency, masked and sparse linear
(docs/benchmarks.md). `panning bench` (panning.cli.bench) prints it; so does bench/bench_cpu_kernels.py.

Everything is measured side by side in one run on this machine: the floors (memory bandwidth from a large
copy, dense fp32 matmul GFLOP/s), then each op against what a user would otherwise write in plain torch
(and torch.sparse CSR for the sparse path), and against its floor. Ours and the baseline are timed
interleaved and the minimum over repeats is kept, because the machine is shared and noisy; the load
average is printed with the table. `rows(quick)` returns the table for `panning bench`.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from panning import ops
from panning.ops import reference

SPARSITIES = (0.90, 0.95, 0.99)


def best_ms(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Minimum wall time in ms of each function, timed interleaved (one call of each per round)."""
    for fn in fns:  # warm-up: allocations, first-call dispatch
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], (time.perf_counter() - start) * 1e3)
    return best


def bandwidth_gbs(numel: int, repeats: int) -> float:
    """Memory bandwidth in GB/s from copying numel fp32 (bytes read + written)."""
    src, dst = torch.ones(numel), torch.empty(numel)
    (ms,) = best_ms([lambda: dst.copy_(src)], repeats)
    return 2 * 4 * numel / ms / 1e6


def matmul_gflops(m: int, k: int, n: int, repeats: int) -> float:
    a, b = torch.randn(m, k), torch.randn(n, k)
    (ms,) = best_ms([lambda: a @ b.t()], repeats)
    return 2 * m * k * n / ms / 1e6


def _row(op, shape, ours, base, baseline, target, met, floor=None):
    return {"op": op, "shape": shape, "ours_ms": ours, "baseline": baseline, "baseline_ms": base,
            "ratio": base / ours, "floor_ms": floor, "ours_vs_floor": ours / floor if floor else None,
            "target": target, "met": met}


def topk_rows(n: int, gbs: float, repeats: int, sparsity: float = 0.9) -> list[dict]:
    """Global top-k mask of n fp32 scores against the torch ways a user would build the same mask."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(n, generator=g)
    k = round(n * (1 - sparsity))

    def with_topk():
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.topk(scores, k, sorted=False).indices] = True
        return mask

    def with_kthvalue():  # a threshold mask: not exact under ties, but what users write
        return scores >= torch.kthvalue(scores, n - k + 1).values

    ours, topk, kth = best_ms([lambda: ops.topk_mask(scores, k, backend="cpp"), with_topk, with_kthvalue], repeats)
    side = int(n ** 0.5)
    layer = nn.Linear(side, side, bias=False)

    def with_prune():
        torch_prune.global_unstructured([(layer, "weight")], torch_prune.L1Unstructured, amount=sparsity)
        torch_prune.remove(layer, "weight")

    (pruned,) = best_ms([with_prune], max(1, repeats // 3))
    floor = n * 4 / gbs / 1e6  # one read of the scores
    shape = f"{n:,} fp32, {sparsity:.0%}"
    fastest, name = min((topk, "torch.topk"), (kth, "torch.kthvalue"))
    return [_row("topk_mask global", shape, ours, fastest, f"{name} (fastest torch way)", ">=20x, <=4x floor",
                 fastest / ours >= 20 and ours <= 4 * floor, floor),
            _row("topk_mask global", f"{side * side:,} fp32, {sparsity:.0%}", ours, pruned,
                 "prune.global_unstructured", ">=100x", pruned / ours >= 100, floor)]


def saliency_rows(n: int, gbs: float, repeats: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    indices = torch.randn(3, n, generator=g) * 2 + 5
    weights = torch.rand(1, 3, generator=g, dtype=torch.float64)
    ours, base = best_ms([lambda: ops.saliency(indices, weights, backend="cpp"),
                          lambda: reference.saliency(indices, weights)], repeats)
    floor = (2 * 3 * n * 4 + n * 4) / gbs / 1e6  # statistics read + combine read + output write
    ratio = base / ours
    return [_row("saliency", f"3 x {n:,}", ours, base, "plain torch (float64)", ">=8x, <=2x floor",
                 ratio >= 8 and ours <= 2 * floor, floor)]


def masked_rows(m: int, i: int, o: int, gflops: float, repeats: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(m, i, generator=g), torch.randn(o, i, generator=g)
    mask = torch.rand(o, i, generator=g) < 0.5
    maskf = mask.float()
    dy = torch.randn(m, o, generator=g)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

    def ours_fb():
        ops.masked_linear(xg, wg, mask, backend="cpp").backward(dy)

    def base_fb():
        (xg @ (wg * maskf).t()).backward(dy)

    fwd = best_ms([lambda: ops.masked_linear(x, w, mask, backend="cpp"), lambda: x @ (w * maskf).t()], repeats)
    fb = best_ms([ours_fb, base_fb], repeats)
    floor = 2 * m * i * o / gflops / 1e6
    shape = f"{m} x {i} x {o}"
    return [_row("masked_linear fwd", shape, *fwd, "x @ (W*M).t()", ">=0.9x", fwd[1] / fwd[0] >= 0.9, floor),
            _row("masked_linear fwd+bwd", shape, *fb, "autograd x @ (W*M).t()", ">=0.9x", fb[1] / fb[0] >= 0.9,
                 3 * floor)]


def sparse_rows(m: int, i: int, o: int, gbs: float, gflops: float, repeats: int) -> list[dict]:
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(m, i, generator=g), torch.randn(o, i, generator=g)
    dy = torch.randn(m, o, generator=g)
    rows = []
    for sparsity in SPARSITIES:
        mask = torch.rand(o, i, generator=g) >= sparsity
        dense_w = w * mask
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            csr = dense_w.to_sparse_csr()
        sw = ops.to_sparse(w, mask, backend="cpp")
        nnz = sw.nnz
        shape = f"{m} x {i} x {o}, {sparsity:.0%}"
        flops, nbytes = 2 * nnz * m, 4 * (m * i + m * o) + 12 * nnz
        floor = max(flops / gflops / 1e6, nbytes / gbs / 1e6)
        ours, dense, sparse = best_ms([lambda: ops.sparse_linear(x, sw, backend="cpp"), lambda: x @ dense_w.t(),
                                       lambda: torch.sparse.mm(csr, x.t()).t()], repeats)
        want = {0.95: 5, 0.99: 20}.get(sparsity)
        rows.append(_row("sparse_linear fwd", shape, ours, dense, "dense x @ (W*M).T", f">={want}x" if want else "-",
                         ours * want <= dense if want else None, floor))
        rows.append(_row("sparse_linear fwd", shape, ours, sparse, "torch.sparse CSR mm",
                         ">=2x" if sparsity == 0.95 else "-", ours * 2 <= sparse if sparsity == 0.95 else None, floor))
        xg, vg, wg = x.clone().requires_grad_(), sw.values.clone().requires_grad_(), dense_w.clone().requires_grad_()
        swg = sw.with_values(vg)

        def ours_fb():
            ops.sparse_linear(xg, swg, backend="cpp").backward(dy)

        def dense_fb():
            (xg @ wg.t()).backward(dy)

        ours, dense = best_ms([ours_fb, dense_fb], repeats)
        rows.append(_row("sparse_linear fwd+bwd", shape, ours, dense, "autograd dense x @ W.T",
                         ">=3x" if sparsity == 0.95 else "-", ours * 3 <= dense if sparsity == 0.95 else None,
                         3 * floor))
    return rows


def rows(quick: bool, repeats: int | None = None) -> list[dict]:
    """The benchmark table: one dict per measurement (see the module docstring)."""
    repeats = repeats or (3 if quick else 5)
    n, (m, i, o) = (1_000_000, (64, 1024, 1024)) if quick else (20_000_000, (256, 4096, 4096))
    gbs = bandwidth_gbs(n * 3, repeats)
    gflops = matmul_gflops(m, i, o, repeats)
    table = [{"op": "floor: copy bandwidth", "shape": f"{3 * n:,} fp32", "value": f"{gbs:.1f} GB/s"},
             {"op": "floor: dense fp32 matmul", "shape": f"{m} x {i} x {o}", "value": f"{gflops:.0f} GFLOP/s"}]
    table += topk_rows(n, gbs, repeats)
    table += saliency_rows(n, gbs, repeats)
    table += masked_rows(m, i, o, gflops, repeats)
    table += sparse_rows(m, i, o, gbs, gflops, repeats)
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| op | shape | ours ms | baseline | baseline ms | ratio | floor ms | ours/floor | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        if "value" in r:
            lines.append(f"| {r['op']} | {r['shape']} | {r['value']} | | | | | | | |")
            continue
        floor = f"{r['floor_ms']:.2f}" if r["floor_ms"] else "-"
        vs = f"{r['ours_vs_floor']:.2f}x" if r["ours_vs_floor"] else "-"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"| {r['op']} | {r['shape']} | {r['ours_ms']:.2f} | {r['baseline']} | {r['baseline_ms']:.2f} | "
                     f"{r['ratio']:.2f}x | {floor} | {vs} | {r['target']} | {met} |")
    return "\n".join(lines)
