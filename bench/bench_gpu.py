"""GPU benchmark of panning's kernels against what a user would otherwise use (docs/benchmarks.md).

    python bench/bench_gpu.py [--numel 20000000] [--output-dir bench/results]   (after pip install -e .)

Needs a CUDA GPU; it exits with a message otherwise (and under TRITON_INTERPRET=1, whose timings mean
nothing). Times are medians of triton.testing.do_bench (CUDA events, cache flushed between runs).
It measures, on the same device in one run:
- the floors: read bandwidth (sum and copy of 1 GiB) and the dense matmul rate (fp32, tf32, bf16);
- top-k mask, global over `numel` fp32 scores keeping 10% (90% sparsity), and per layer over 64
  segments: panning's Triton and CUDA kernels against torch.topk and torch.kthvalue (which only select,
  and write no mask), and against one read of the scores at the measured bandwidth; plus the extra
  device memory beyond the mask;
- saliency combine of 3 indices over `numel` weights: Triton against the same math in plain torch
  and against the two-pass floor;
- masked and sparse (CSR) linear at 90/95/99% sparsity, x (M x 4096) by W (4096 x 4096), M = 16 and
  256, in fp32, tf32 and bf16: against dense cuBLAS (F.linear), torch.sparse CSR, and 2:4
  semi-structured sparsity (50%, bf16, where the GPU supports it) as a reference point.
The markdown table goes to <output-dir>/gpu-<device>-<date>.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from panning.io import write_text  # imports no kernel: TRITON_INTERPRET is still checked first

ROOT = Path(__file__).resolve().parents[1]


def require_gpu() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("bench_gpu.py: TRITON_INTERPRET=1 is set; the interpreter's timings mean nothing. Unset it.")
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a GPU machine.")


@dataclass
class Row:
    section: str
    case: str
    method: str
    ms: float | None  # None: not applicable here (the note says why)
    baseline_ms: float | None = None
    note: str = ""

    def cells(self) -> list[str]:
        time = f"{self.ms:.4f}" if self.ms is not None else "n/a"
        speedup = f"{self.baseline_ms / self.ms:.2f}x" if self.ms and self.baseline_ms else ""
        return [self.section, self.case, self.method, time, speedup, self.note]


def timed(fn) -> float:
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def attempt(fn) -> tuple[float | None, str]:
    """(median ms, "") or (None, why it cannot run here)."""
    try:
        return timed(fn), ""
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as error:
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"


@contextlib.contextmanager
def tf32(enabled: bool):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


# ---------------------------------------------------------------------------------------------- floors


def floors(rows: list[Row]) -> tuple[float, dict[str, float]]:
    """Measured read bandwidth (GB/s) and dense matmul rates (TFLOP/s) by precision."""
    x = torch.empty(2**28, device="cuda")  # 1 GiB of float32
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    read = nbytes / timed(lambda: x.sum()) / 1e6
    copy = 2 * nbytes / timed(lambda: y.copy_(x)) / 1e6
    bandwidth = max(read, copy)
    rows.append(Row("floor", "1 GiB fp32", "read (sum)", nbytes / read / 1e6, note=f"{read:.0f} GB/s"))
    rows.append(Row("floor", "1 GiB fp32", "copy", 2 * nbytes / copy / 1e6, note=f"{copy:.0f} GB/s (read+write)"))
    x = y = None  # free the 2 GiB before the matmuls
    rates = {}
    n = 8192
    for name, dtype, allow_tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                    ("bf16", torch.bfloat16, False)):
        a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
        with tf32(allow_tf32):
            ms = timed(lambda: a @ b)
        rates[name] = 2 * n**3 / ms / 1e9
        rows.append(Row("floor", f"{n}^3 matmul", name, ms, note=f"{rates[name]:.1f} TFLOP/s"))
    return bandwidth, rates


# ---------------------------------------------------------------------------------------------- top-k


def bench_topk(rows: list[Row], numel: int, bandwidth: float) -> None:
    from panning import ops

    g = torch.Generator(device="cuda").manual_seed(0)
    scores = torch.randn(numel, device="cuda", generator=g)
    k = numel // 10  # keep 10%: 90% sparsity
    case = f"{numel / 1e6:.0f}M fp32, keep 10%"
    floor_ms = numel * 4 / bandwidth / 1e6
    topk_ms, _ = attempt(lambda: torch.topk(scores, k, sorted=False))
    kth_ms, note = attempt(lambda: torch.kthvalue(scores, numel - k + 1))
    best_torch = min(t for t in (topk_ms, kth_ms) if t is not None)
    rows.append(Row("top-k", case, "one read of the scores (floor)", floor_ms, best_torch))
    rows.append(Row("top-k", case, "torch.topk (select only)", topk_ms, best_torch))
    rows.append(Row("top-k", case, "torch.kthvalue (select only)", kth_ms, best_torch, note))
    layers = torch.linspace(0, numel, 65, device="cpu").round().long()  # 64 layers of about equal size
    layer_k = (layers.diff() // 10).tolist()
    for backend in ("triton", "cuda"):
        if not ops.backends()[backend]["available"]:
            rows.append(Row("top-k", case, f"panning {backend}", None, note=ops.backends()[backend]["reason"][:80]))
            continue
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        ops.topk_mask(scores, k, backend=backend)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before - numel  # beyond the bool mask itself
        ms = timed(lambda: ops.topk_mask(scores, k, backend=backend))
        rows.append(Row("top-k", case, f"panning {backend}", ms, best_torch,
                        f"{ms / floor_ms:.1f}x the floor; extra memory {extra / numel:.3f} B/score"))
        ms = timed(lambda: ops.topk_mask(scores, layer_k, offsets=layers, backend=backend))
        rows.append(Row("top-k", f"{case}, 64 layers", f"panning {backend}", ms, best_torch,
                        f"{ms / floor_ms:.1f}x the floor"))


# ---------------------------------------------------------------------------------------------- saliency


def bench_saliency(rows: list[Row], numel: int, bandwidth: float) -> None:
    from panning import ops
    from panning.ops import reference

    g = torch.Generator(device="cuda").manual_seed(1)
    indices = torch.randn(3, numel, device="cuda", generator=g)
    weights = torch.tensor([[0.2, 0.5, 0.3]], device="cuda", dtype=torch.float64)
    case = f"3 indices x {numel / 1e6:.0f}M fp32"
    plain, _ = attempt(lambda: reference.saliency(indices, weights))
    floor_ms = (2 * indices.numel() + numel) * 4 / bandwidth / 1e6  # read twice, write once
    rows.append(Row("saliency", case, "two-pass floor", floor_ms, plain))
    rows.append(Row("saliency", case, "plain torch (float64 statistics)", plain, plain))
    ms = timed(lambda: ops.saliency(indices, weights, backend="triton"))
    rows.append(Row("saliency", case, "panning triton", ms, plain, f"{ms / floor_ms:.1f}x the floor"))


# ---------------------------------------------------------------------------------------------- matmuls


def random_mask(shape, sparsity: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, device="cuda", generator=g) >= sparsity


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest magnitudes of every 4 consecutive weights (the 2:4 pattern)."""
    groups = weight.abs().view(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(2, dim=1).indices, True)
    return keep.view_as(weight)


def semi_structured_row(x: torch.Tensor, weight: torch.Tensor, shape: str, dense_ms: float) -> Row:
    """2:4 semi-structured sparsity (cuSPARSELt / CUTLASS) at its one sparsity, 50%, for scale."""
    method = "2:4 semi-structured (50%)"
    if torch.cuda.get_device_capability() < (8, 0):
        return Row("matmul fwd", shape, method, None, note="needs compute capability >= 8.0")
    try:
        compressed = torch.sparse.to_sparse_semi_structured(weight * two_four_mask(weight))
    except (RuntimeError, NotImplementedError, ValueError) as error:
        return Row("matmul fwd", shape, method, None, note=f"conversion failed: {str(error).splitlines()[0][:60]}")
    ms, note = attempt(lambda: F.linear(x, compressed))
    return Row("matmul fwd", shape, method, ms, dense_ms, note)


def bench_matmul(rows: list[Row], batch_sizes: list[int], sparsities: list[float], features: int) -> None:
    from panning import ops

    g = torch.Generator(device="cuda").manual_seed(2)
    for precision, dtype, allow_tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                         ("bf16", torch.bfloat16, False)):
        with tf32(allow_tf32):
            for m in batch_sizes:
                x = torch.randn(m, features, device="cuda", dtype=dtype, generator=g)
                weight = torch.randn(features, features, device="cuda", dtype=dtype, generator=g)
                dy = torch.randn(m, features, device="cuda", dtype=dtype, generator=g)
                shape = f"{m}x{features} @ {features}x{features}^T {precision}"
                dense = timed(lambda: F.linear(x, weight))
                rows.append(Row("matmul fwd", shape, "dense cuBLAS", dense, dense))
                xg, wg = x.clone().requires_grad_(), weight.clone().requires_grad_()
                dense_fb = timed(lambda: F.linear(xg, wg).backward(dy))
                rows.append(Row("matmul fwd+bwd", shape, "dense cuBLAS", dense_fb, dense_fb))
                if dtype == torch.bfloat16:
                    rows.append(semi_structured_row(x, weight, shape, dense))
                for sparsity in sparsities:
                    case = f"{shape}, {sparsity:.0%} sparse"
                    mask = random_mask(weight.shape, sparsity, g)
                    ms = timed(lambda: ops.masked_linear(x, weight, mask, backend="triton"))
                    rows.append(Row("matmul fwd", case, "panning masked (triton)", ms, dense))
                    sw = ops.to_sparse(weight, mask, backend="triton")
                    ms = timed(lambda: ops.sparse_linear(x, sw, backend="triton"))
                    rows.append(Row("matmul fwd", case, "panning sparse CSR (triton)", ms, dense))
                    csr = (weight * mask).to_sparse_csr()
                    ms, note = attempt(lambda: torch.mm(csr, x.t()))
                    rows.append(Row("matmul fwd", case, "torch.sparse CSR (cuSPARSE)", ms, dense, note))
                    maskf = mask.to(dtype)
                    ms = timed(lambda: ops.masked_linear(xg, wg, maskf, backend="triton").backward(dy))
                    rows.append(Row("matmul fwd+bwd", case, "panning masked (triton)", ms, dense_fb))
                    values = sw.values.clone().requires_grad_()
                    swg = sw.with_values(values)
                    ms = timed(lambda: ops.sparse_linear(xg, swg, backend="triton").backward(dy))
                    rows.append(Row("matmul fwd+bwd", case, "panning sparse CSR (triton)", ms, dense_fb))


# ---------------------------------------------------------------------------------------------- report


def report(rows: list[Row], args, elapsed: float) -> str:
    import triton

    device = torch.cuda.get_device_name()
    lines = [f"# panning GPU benchmark: {device}, {datetime.date.today().isoformat()}", "",
             f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
             f"Python {platform.python_version()}; `python bench/bench_gpu.py --numel {args.numel}` "
             f"({elapsed:.0f} s). Times are medians of triton.testing.do_bench; speedup = baseline time / "
             "time (above 1: faster than the section's baseline, the first row of each case).", "",
             "| section | case | method | ms | speedup | note |", "|---|---|---|---:|---:|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numel", type=int, default=20_000_000, help="scores / weights for top-k and saliency")
    parser.add_argument("--features", type=int, default=4096, help="in = out features of the matmuls")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    require_gpu()
    from panning import ops  # the installed package: kernels/ becomes panning.kernels at install time

    if not ops.backends()["triton"]["available"]:
        raise SystemExit(f"bench_gpu.py: the Triton backend is unavailable: {ops.backends()['triton']['reason']}")
    start = datetime.datetime.now()
    rows: list[Row] = []
    bandwidth, _ = floors(rows)
    bench_topk(rows, args.numel, bandwidth)
    bench_saliency(rows, args.numel, bandwidth)
    bench_matmul(rows, [16, 256], [0.9, 0.95, 0.99], args.features)
    text = report(rows, args, (datetime.datetime.now() - start).total_seconds())
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-").lower()
    path = args.output_dir / f"gpu-{name}-{datetime.date.today().isoformat()}.md"
    write_text(path, text)
    print(text)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
