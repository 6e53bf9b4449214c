"""GPU benchmark of panning's kernels against what a user would otherwise use (docs/benchmarks.md).

    python bench/bench_gpu.py [--output-dir bench/results]       (after pip install -e .; needs a CUDA GPU)
    python bench/bench_gpu.py --list                              the sections and cases, nothing run
    python bench/bench_gpu.py --smoke                             tiny shapes, any machine: checks the code runs

Everything is timed side by side in one process on one device; times are medians of triton.testing.do_bench
(CUDA events, L2 flushed between calls). It measures:
- the floors: read bandwidth (sum and copy of 1 GiB) and the dense matmul rate (fp32, tf32, bf16);
- top-k mask, global over `numel` fp32 scores keeping 10% (90% sparsity), and per layer over 64 segments:
  panning's Triton and CUDA kernels against torch.topk (with and without writing the mask), torch.kthvalue
  and one read of the scores at the measured bandwidth; the extra device memory beyond the mask; and which
  of the two kernels was faster (the one to make the default in panning/ops/dispatch.py);
- saliency combine of 3 indices over `numel` weights: Triton against the same math in plain torch and
  against the two-pass floor;
- masked and compressed (CSR) sparse linear, forward and forward + backward, x (M x F) by W (F x F) at
  90/95/99% sparsity for M = 1, 16, 64, 256, in fp32 and bf16 (--precisions: tf32 too): against dense cuBLAS, with
  torch.sparse CSR (cuSPARSE) and 2:4 semi-structured sparsity (50%, bf16) as reference points;
- one jackpot search step (panning.jackpot.Searcher, no restriction and the short one) against one dense
  training step on VGG-19-BN at CIFAR shape (bench/bench_jackpot.py builds both steps).
Each target of docs/benchmarks.md ("Targets (GPU)") is printed as met / missed with its figure. The markdown
table goes to <output-dir>/gpu-<device>-<date>.md, rewritten after every section (the matmul grid, the longest,
last), so that a run stopped by a time limit keeps what it measured.

--smoke runs every section at tiny shapes on whatever is there (without a GPU: the Triton interpreter on the
CPU, timed with a wall clock); its table says so and judges no target: it checks the code, not the speed.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import re
import sys
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from panning.io import write_text  # imports no kernel: TRITON_INTERPRET can still be set before they load

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The shapes of one run: FULL is docs/benchmarks.md's, SMOKE a tiny one for CI."""

    numel: int  # scores of the top-k, weights of the saliency
    segments: int  # layers of the per-layer top-k
    features: int  # in = out features of the matmuls
    batches: tuple[int, ...]
    sparsities: tuple[float, ...]
    precisions: tuple[str, ...]
    floor_elements: int  # float32 elements read / copied for the bandwidth floor
    floor_matmul: int  # n of the n x n x n matmuls of the rate floor
    jackpot: tuple[float, int]  # VGG-19-BN width, batch (CIFAR shape 3 x 32 x 32)


FULL = Settings(numel=20_000_000, segments=64, features=4096, batches=(1, 16, 64, 256),
                sparsities=(0.90, 0.95, 0.99), precisions=("fp32", "bf16"), floor_elements=2**28,
                floor_matmul=8192, jackpot=(1.0, 128))
SMOKE = Settings(numel=3000, segments=4, features=48, batches=(1, 16), sparsities=(0.95,),
                 precisions=("fp32", "bf16"), floor_elements=2**16, floor_matmul=64, jackpot=(0.0625, 2))
PRECISIONS = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False)}
SPARSE_TARGET = (0.95, 64)  # compressed sparse linear faster than dense at >= 95% sparsity for batch <= 64


# ---------------------------------------------------------------------------------------------- the run


class Run:
    """The device, the clock and the rows of one benchmark run."""

    def __init__(self, settings: Settings, smoke: bool):
        self.settings, self.smoke = settings, smoke
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.rows: list[Row] = []
        self.checks: list[Check] = []
        self.notes: list[str] = []

    def timed(self, fn) -> float:
        """Median milliseconds of `fn`: triton.testing.do_bench on a GPU, else the best of a few wall-clock calls
        (one in a smoke run)."""
        if self.device.type == "cuda":
            from triton.testing import do_bench
            return do_bench(fn, warmup=5 if self.smoke else 25, rep=10 if self.smoke else 100,
                            return_mode="median")
        from panning.timing import interleaved
        return 1e3 * min(interleaved({"fn": fn}, repeats=1 if self.smoke else 3)["fn"])

    def attempt(self, fn) -> tuple[float | None, str]:
        """(median ms, "") or (None, why it cannot run here)."""
        try:
            return self.timed(fn), ""
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as error:
            return None, f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"

    def add(self, *args, **kwargs) -> None:
        self.rows.append(Row(*args, **kwargs))

    def check(self, target: str, figure: str, met: bool) -> None:
        self.checks.append(Check(target, figure, None if self.smoke else met))

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)


@dataclasses.dataclass
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


@dataclasses.dataclass
class Check:
    target: str
    figure: str
    met: bool | None  # None: not judged (a smoke run)

    def cells(self) -> list[str]:
        verdict = "not judged (smoke run)" if self.met is None else ("met" if self.met else "MISSED")
        return [self.target, self.figure, verdict]


def faster(ours: float | None, baseline: float | None, ratio: float) -> bool:
    """Whether ours is at least `ratio` times faster than baseline (panning.cli.bench_run.Target's rule)."""
    from panning.cli.bench_run import Target
    return ours is not None and baseline is not None and Target("baseline", ratio).met(ours, baseline)


def within(ours: float | None, floor: float, ratio: float) -> bool:
    """Whether ours is at most `ratio` times the floor."""
    from panning.cli.bench_run import Target
    return ours is not None and Target("floor", ratio).met(ours, floor)


@contextlib.contextmanager
def tf32(enabled: bool):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def plan(s: Settings) -> list[tuple[str, str]]:
    """(section, case) of everything a run with settings `s` measures, in order (what --list prints)."""
    n = f"{s.numel:,} fp32"
    cases = [("floor", f"read and copy of {s.floor_elements:,} fp32"),
             ("floor", f"{s.floor_matmul}^3 matmul in fp32, tf32, bf16"),
             ("top-k", f"{n}, keep 10%: torch.topk, torch.kthvalue, panning triton / cuda, global and "
                       f"{s.segments} layers"),
             ("saliency", f"3 indices x {n}: plain torch, panning triton")]
    width, batch = s.jackpot
    cases.append(("jackpot", f"VGG-19-BN width {width:g}, batch {batch} x 3 x 32 x 32: dense step, search step "
                             "(no restriction, short)"))
    for precision in s.precisions:
        for m in s.batches:
            sparsities = ", ".join(f"{p:.0%}" for p in s.sparsities)
            cases.append(("matmul", f"{m}x{s.features} @ {s.features}x{s.features}^T {precision}: dense cuBLAS, "
                                    f"panning masked and compressed at {sparsities}, fwd and fwd+bwd"))
    return cases


# ---------------------------------------------------------------------------------------------- floors


def floors(run: Run) -> float:
    """Measured read bandwidth in GB/s (the larger of a sum and a copy); the dense matmul rates as rows."""
    s = run.settings
    x = torch.randn(s.floor_elements, device=run.device, generator=run.generator(0))
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    read = nbytes / run.timed(lambda: x.sum()) / 1e6
    copy = 2 * nbytes / run.timed(lambda: y.copy_(x)) / 1e6
    case = f"{s.floor_elements:,} fp32"
    run.add("floor", case, "read (sum)", nbytes / read / 1e6, note=f"{read:.0f} GB/s")
    run.add("floor", case, "copy", 2 * nbytes / copy / 1e6, note=f"{copy:.0f} GB/s (read+write)")
    x = y = None  # free them before the matmuls
    n = s.floor_matmul
    for name, (dtype, allow_tf32) in PRECISIONS.items():
        a, b = (torch.randn(n, n, device=run.device, generator=run.generator(1)).to(dtype) for _ in range(2))
        with tf32(allow_tf32):
            ms = run.timed(lambda: a @ b)
        run.add("floor", f"{n}^3 matmul", name, ms, note=f"{2 * n**3 / ms / 1e9:.1f} TFLOP/s")
    return max(read, copy)


# ---------------------------------------------------------------------------------------------- top-k


def topk_backends(run: Run) -> list[str]:
    """The compiled top-k kernels to time: triton and cuda where they run on this device (rows say why not)."""
    from panning import ops

    names = []
    for backend in ("triton", "cuda"):
        info = ops.backends()[backend]
        if info["available"] and run.device.type in info["devices"]:
            names.append(backend)
        else:
            why = info["reason"] if not info["available"] else f"does not run on {run.device.type}"
            run.add("top-k", "every case", f"panning {backend}", None, note=why[:100])
    return names


def bench_topk(run: Run, bandwidth: float) -> None:
    from panning import ops

    s = run.settings
    scores = torch.randn(s.numel, device=run.device, generator=run.generator(0))
    k = s.numel // 10  # keep 10%: 90% sparsity
    case = f"{s.numel:,} fp32, keep 10%"
    floor_ms = s.numel * 4 / bandwidth / 1e6

    def topk_mask():
        mask = torch.zeros(s.numel, dtype=torch.bool, device=run.device)
        return mask.index_fill_(0, torch.topk(scores, k, sorted=False).indices, True)

    with_mask, _ = run.attempt(topk_mask)
    select, _ = run.attempt(lambda: torch.topk(scores, k, sorted=False))
    kth, note = run.attempt(lambda: scores >= torch.kthvalue(scores, s.numel - k + 1).values)
    run.add("top-k", case, "one read of the scores (floor)", floor_ms, with_mask, "at the measured bandwidth")
    run.add("top-k", case, "torch.topk + mask (baseline)", with_mask, with_mask)
    run.add("top-k", case, "torch.topk, select only", select, with_mask)
    run.add("top-k", case, "torch.kthvalue threshold mask", kth, with_mask, note)
    bounds = torch.linspace(0, s.numel, s.segments + 1).round().long()  # layers of about equal size
    layer_k = (bounds.diff() // 10).tolist()
    best, per_layer = {}, {}
    for backend in topk_backends(run):
        extra = extra_memory(run, lambda: ops.topk_mask(scores, k, backend=backend), s.numel)
        right = is_top_k(ops.topk_mask(scores, k, backend=backend), scores, k)
        ms = run.timed(lambda: ops.topk_mask(scores, k, backend=backend))
        best[backend] = ms
        run.add("top-k", case, f"panning {backend}", ms, with_mask,
                f"{ms / floor_ms:.2f}x the floor" + (f"; extra memory {extra / s.numel:.3f} B/score"
                                                     if extra is not None else "")
                + ("" if right else "; WRONG MASK: not the top k"))
        layered = run.timed(lambda: ops.topk_mask(scores, layer_k, offsets=bounds, backend=backend))
        per_layer[backend] = layered
        run.add("top-k", f"{case}, {s.segments} layers", f"panning {backend}", layered, with_mask,
                f"{layered / floor_ms:.2f}x the floor")
        wrong = "" if right else " (WRONG MASK)"
        run.check(f"top-k {backend} <= 2x one read at the measured bandwidth",
                  f"{ms / floor_ms:.2f}x ({ms:.3f} ms, floor {floor_ms:.3f} ms){wrong}",
                  right and within(ms, floor_ms, 2))
        run.check(f"top-k {backend} >= 10x torch.topk (+ mask)",
                  (f"{with_mask / ms:.1f}x" if with_mask else "torch.topk failed") + wrong,
                  right and faster(ms, with_mask, 10))
    if best:
        winner = min(best, key=best.get)
        others = ", ".join(f"{name} {ms:.3f} ms, {per_layer[name]:.3f} ms over {s.segments} layers"
                           for name, ms in best.items())
        run.notes.append(f"Faster top-k here: **{winner}** ({others}); the default of topk_mask on cuda is "
                         "MEASURED[('cuda', 'topk_mask')] in panning/ops/dispatch.py.")


def is_top_k(mask: torch.Tensor, scores: torch.Tensor, k: int) -> bool:
    """Whether `mask` keeps k scores, none smaller than any it drops (a timing of a wrong mask means nothing)."""
    kept = int(mask.sum())
    return kept == k and (k in (0, scores.numel()) or bool(scores[mask].min() >= scores[~mask].max()))


def extra_memory(run: Run, fn, output_bytes: int) -> int | None:
    """Peak device bytes `fn` allocates beyond its output and what was allocated before (None off a GPU)."""
    if run.device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before - output_bytes


# ---------------------------------------------------------------------------------------------- saliency


def bench_saliency(run: Run, bandwidth: float) -> None:
    from panning import ops
    from panning.ops import reference

    s = run.settings
    indices = torch.randn(3, s.numel, device=run.device, generator=run.generator(1))
    weights = torch.tensor([[0.2, 0.5, 0.3]], device=run.device, dtype=torch.float64)
    case = f"3 indices x {s.numel:,} fp32"
    plain, _ = run.attempt(lambda: reference.saliency(indices, weights))
    floor_ms = (2 * indices.numel() + s.numel) * 4 / bandwidth / 1e6  # read twice, write once
    run.add("saliency", case, "two-pass floor", floor_ms, plain, "at the measured bandwidth")
    run.add("saliency", case, "plain torch (float64 statistics)", plain, plain)
    ms = run.timed(lambda: ops.saliency(indices, weights, backend="triton"))
    run.add("saliency", case, "panning triton", ms, plain, f"{ms / floor_ms:.2f}x the floor")


# ---------------------------------------------------------------------------------------------- matmuls


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest magnitudes of every 4 consecutive weights (the 2:4 pattern)."""
    groups = weight.abs().view(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(2, dim=1).indices, True)
    return keep.view_as(weight)


def semi_structured(run: Run, x: torch.Tensor, weight: torch.Tensor, shape: str, dense_ms: float) -> None:
    """2:4 semi-structured sparsity (cuSPARSELt / CUTLASS) at its one sparsity, 50%, for scale."""
    method = "2:4 semi-structured (50%)"
    if run.device.type != "cuda" or torch.cuda.get_device_capability() < (8, 0):
        run.add("matmul fwd", shape, method, None, note="needs a GPU of compute capability >= 8.0")
        return
    try:
        compressed = torch.sparse.to_sparse_semi_structured(weight * two_four_mask(weight))
    except (RuntimeError, NotImplementedError, ValueError) as error:
        run.add("matmul fwd", shape, method, None, note=f"conversion failed: {str(error).splitlines()[0][:60]}")
        return
    ms, note = run.attempt(lambda: F.linear(x, compressed))
    run.add("matmul fwd", shape, method, ms, dense_ms, note)


def matmul_inputs(device: torch.device, g: torch.Generator, precision: str, m: int, f: int):
    """x (m, f), dy (m, f) and a weight (f, f) of `precision`'s dtype."""
    dtype = PRECISIONS[precision][0]
    return tuple(torch.randn(shape, device=device, generator=g).to(dtype) for shape in ((m, f), (m, f), (f, f)))


def sparse_variants(x: torch.Tensor, dy: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> dict:
    """{method: fn} of one sparse case: panning's masked and compressed linear (Triton), forward and forward +
    backward (dx and, as in a mask search, the score gradient; dx and the values' gradient), and cuSPARSE."""
    from panning import ops

    xg = x.clone().requires_grad_()
    score = mask.to(x.dtype).requires_grad_()
    sw = ops.to_sparse(weight, mask, backend="triton")
    swg = sw.with_values(sw.values.clone().requires_grad_())
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        csr = (weight * mask).to_sparse_csr()
    return {
        "masked fwd": lambda: ops.masked_linear(x, weight, mask, backend="triton"),
        "compressed fwd": lambda: ops.sparse_linear(x, sw, backend="triton"),
        "cuSPARSE fwd": lambda: torch.mm(csr, x.t()),
        "masked fwd+bwd": lambda: ops.masked_linear(xg, weight, score, score_grad=True,
                                                    backend="triton").backward(dy),
        "compressed fwd+bwd": lambda: ops.sparse_linear(xg, swg, backend="triton").backward(dy),
    }


METHODS = {  # sparse_variants' names -> (section, method, note)
    "masked fwd": ("matmul fwd", "panning masked (triton)", ""),
    "compressed fwd": ("matmul fwd", "panning compressed CSR (triton)", ""),
    "cuSPARSE fwd": ("matmul fwd", "torch.sparse CSR (cuSPARSE)", ""),
    "masked fwd+bwd": ("matmul fwd+bwd", "panning masked (triton)", "dx and dScore"),
    "compressed fwd+bwd": ("matmul fwd+bwd", "panning compressed CSR (triton)", "dx and dValues"),
}


def bench_matmul(run: Run) -> None:
    s, g, device = run.settings, run.generator(2), run.device
    f = s.features
    for precision in s.precisions:
        with tf32(PRECISIONS[precision][1]):
            for m in s.batches:
                x, dy, weight = matmul_inputs(device, g, precision, m, f)
                shape = f"{m}x{f} @ {f}x{f}^T {precision}"
                print(f"matmul {shape}", flush=True)  # in the log: where a run stopped by its time limit was
                dense = {"fwd": run.timed(lambda: F.linear(x, weight))}
                run.add("matmul fwd", shape, "dense cuBLAS", dense["fwd"], dense["fwd"])
                xg, wg = x.clone().requires_grad_(), weight.clone().requires_grad_()
                dense["fwd+bwd"] = run.timed(lambda: F.linear(xg, wg).backward(dy))
                run.add("matmul fwd+bwd", shape, "dense cuBLAS", dense["fwd+bwd"], dense["fwd+bwd"], "dx and dW")
                if precision == "bf16":
                    semi_structured(run, x, weight, shape, dense["fwd"])
                for sparsity in s.sparsities:
                    case = f"{shape}, {sparsity:.0%} sparse"
                    mask = torch.rand(weight.shape, device=device, generator=g) >= sparsity
                    times = {}
                    for name, fn in sparse_variants(x, dy, weight, mask).items():
                        section, method, note = METHODS[name]
                        times[name], why = run.attempt(fn)
                        run.add(section, case, method, times[name], dense[section.split()[1]], why or note)
                    if sparsity >= SPARSE_TARGET[0] and m <= SPARSE_TARGET[1]:
                        for what in ("fwd", "fwd+bwd"):
                            ours, base = times[f"compressed {what}"], dense[what]
                            run.check(f"compressed {what} faster than dense cuBLAS, {case}",
                                      f"{base / ours:.2f}x ({ours:.4f} vs {base:.4f} ms)" if ours else "failed",
                                      faster(ours, base, 1.0))


def warm_case(precision: str, m: int, settings: Settings) -> None:
    """Call every matmul variant of one (precision, batch) once: compiles and autotunes its Triton kernels into
    Triton's on-disk cache (run in a worker process, so that the cases compile in parallel)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=device).manual_seed(2)
    with tf32(PRECISIONS[precision][1]):
        x, dy, weight = matmul_inputs(device, g, precision, m, settings.features)
        for sparsity in settings.sparsities:
            mask = torch.rand(weight.shape, device=device, generator=g) >= sparsity
            for name, fn in sparse_variants(x, dy, weight, mask).items():
                if name != "cuSPARSE fwd":
                    fn()


def warm(run: Run, workers: int) -> None:
    """Compile the matmul kernels of every case in `workers` processes before timing (each Triton compile is
    single-threaded; the autotuner compiles every configuration of every specialization)."""
    import concurrent.futures
    import multiprocessing
    import time

    s = run.settings
    cases = [(precision, m) for precision in s.precisions for m in s.batches]
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(cases)), mp_context=context) as pool:
        jobs = {pool.submit(warm_case, precision, m, s): f"{precision}, batch {m}" for precision, m in cases}
    for job, case in jobs.items():
        if job.exception() is not None:  # timing the case will meet the same error and say it in its rows
            run.notes.append(f"Compiling the matmul kernels of {case} failed: {type(job.exception()).__name__}: "
                             f"{str(job.exception()).splitlines()[0][:200]}")
    run.notes.append(f"The matmul kernels were compiled beforehand in {min(workers, len(cases))} worker process(es) "
                     f"({time.perf_counter() - start:.0f} s); the autotuner still ran in this one.")


# ---------------------------------------------------------------------------------------------- jackpot


def bench_jackpot(run: Run) -> None:
    """One search step against one dense training step, built by bench/bench_jackpot.py (the CPU benchmark)."""
    import copy

    from bench_jackpot import dense_step, search_step  # bench/ is on sys.path: this file runs as a script
    from panning import models

    width, batch = run.settings.jackpot
    torch.manual_seed(0)
    base = models.build("vgg19_bn", (3, 32, 32), 10, width=width).to(run.device)
    x = torch.randn(batch, 3, 32, 32, device=run.device, generator=run.generator(3))
    y = torch.randint(0, 10, (batch,), device=run.device, generator=run.generator(4))
    case = f"VGG-19-BN width {width:g}, batch {batch}, 90% sparse"
    dense = run.timed(dense_step(copy.deepcopy(base), x, y))
    run.add("jackpot", case, "dense training step", dense, dense)
    total = 1_000_000  # schedule length: never runs out while timing
    for restriction in ("none", "short"):
        step, topk = search_step(copy.deepcopy(base), x, y, restriction, total)
        ms = run.timed(step)
        run.add("jackpot", case, f"search step (restriction {restriction})", ms, dense)
        run.check(f"jackpot step (restriction {restriction}) <= 1.3x a dense step, {case}",
                  f"{ms / dense:.2f}x ({ms:.2f} vs {dense:.2f} ms)", within(ms, dense, 1.3))
    run.add("jackpot", case, "the step's segmented top-k alone", run.timed(topk), dense)


# ---------------------------------------------------------------------------------------------- report


def report(run: Run, command: str, elapsed: float, pending: list[str]) -> str:
    import triton

    device = torch.cuda.get_device_name() if run.device.type == "cuda" else f"CPU ({platform.machine()})"
    driver = nvidia_driver()
    title = "SMOKE RUN (tiny shapes; no figure here is a GPU measurement)" if run.smoke else "GPU benchmark"
    lines = [f"# panning {title}: {device}, {datetime.date.today().isoformat()}", "",
             f"torch {torch.__version__} (CUDA {torch.version.cuda}), NVIDIA driver {driver}, "
             f"triton {triton.__version__}, Python {platform.python_version()}; `{command}` ({elapsed:.0f} s). "
             + ("Times are medians of triton.testing.do_bench" if run.device.type == "cuda" else
                "Times are wall-clock minima of the Triton interpreter and the CPU")
             + "; speedup = the case's baseline time / time (above 1: faster than the baseline).", ""]
    if pending:
        lines += [f"**Incomplete**: still to measure when this was written: {', '.join(pending)}.", ""]
    if run.checks:
        lines += ["## Targets", "", "| target | figure | verdict |", "|---|---|---|"]
        lines += ["| " + " | ".join(c.cells()) + " |" for c in run.checks]
        lines.append("")
    lines += [f"- {note}" for note in run.notes] + ([""] if run.notes else [])
    lines += ["## All rows", "", "| section | case | method | ms | speedup | note |", "|---|---|---|---:|---:|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in run.rows]
    return "\n".join(lines) + "\n"


def nvidia_driver() -> str:
    """The NVIDIA driver version as nvidia-smi reports it, or why it is unknown."""
    import subprocess
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({type(error).__name__})"
    return found.stdout.strip().splitlines()[0] if found.returncode == 0 and found.stdout.strip() else "unknown"


def require_gpu() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("bench_gpu.py: TRITON_INTERPRET=1 is set; the interpreter's timings mean nothing. Unset it "
                         "(or pass --smoke to check the code without timing anything that counts).")
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a GPU machine, "
                         "or pass --smoke to check the code at tiny shapes.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on any machine: checks the code runs")
    parser.add_argument("--list", action="store_true", help="print the sections and cases, run nothing")
    parser.add_argument("--compile-workers", type=int, default=None,
                        help="processes that compile the matmul kernels before timing (0: compile while timing; "
                             "default: up to 12 on a GPU, 0 with --smoke)")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS),
                        help="of the matmuls (default: fp32 as torch runs it, without TF32, and bf16)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    if args.precisions:
        settings = dataclasses.replace(settings, precisions=tuple(args.precisions))
    if args.list:
        for section, case in plan(settings):
            print(f"{section}: {case}")
        return 0
    if not args.smoke:
        require_gpu()
    elif not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"  # before panning.kernels is imported: the kernels run on the CPU
    from panning import ops

    if not ops.backends()["triton"]["available"]:
        raise SystemExit(f"bench_gpu.py: the Triton backend is unavailable: {ops.backends()['triton']['reason']}")
    start = datetime.datetime.now()
    run = Run(settings, args.smoke)
    command = "python bench/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    name = torch.cuda.get_device_name() if run.device.type == "cuda" else "cpu"
    name = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    path = args.output_dir / f"gpu-{name}{'-smoke' if args.smoke else ''}-{datetime.date.today().isoformat()}.md"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    workers = args.compile_workers if args.compile_workers is not None else (0 if args.smoke else
                                                                              min(12, os.cpu_count() or 1))
    bandwidth = 0.0

    def measure_floors():
        nonlocal bandwidth
        bandwidth = floors(run)

    def matmul():
        if workers > 0:
            warm(run, workers)
        bench_matmul(run)

    # The longest section last; the table is written after every section, so a run stopped by a time limit
    # keeps what it measured.
    sections = {"floors": measure_floors, "top-k": lambda: bench_topk(run, bandwidth),
                "saliency": lambda: bench_saliency(run, bandwidth), "jackpot": lambda: bench_jackpot(run),
                "matmul": matmul}
    failed = []
    for done, (section, measure) in enumerate(sections.items(), 1):
        try:
            measure()
        except Exception as error:
            traceback.print_exc()
            failed.append(section)
            run.notes.append(f"Section {section} FAILED: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
                             " (traceback in the log); its rows are missing or partial.")
        pending = list(sections)[done:]
        text = report(run, command.strip(), (datetime.datetime.now() - start).total_seconds(), pending)
        write_text(path, text)
        print(f"{section} done; table written to {path}", flush=True)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
