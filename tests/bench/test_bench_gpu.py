"""bench/bench_gpu.py off a GPU: it refuses a real run with a clear message, lists its cases, and its --smoke
run executes every section at tiny shapes (Triton interpreter, CPU) and judges no target.

The benchmark itself needs a GPU (scripts/gpu_check.sh runs it there; docs/benchmarks.md, "GPU check").
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_gpu.py"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the benchmark would really run")


def bench_gpu(*args: str, interpret: bool = False) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=600)


def load_bench_gpu(monkeypatch):
    """bench/bench_gpu.py as a module, importable as when it runs as a script (bench_jackpot beside it)."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@NO_GPU
def test_gpu_benchmark_refuses_to_run_without_a_gpu():
    result = bench_gpu()
    assert result.returncode != 0
    assert "bench_gpu.py needs a CUDA GPU" in result.stderr
    result = bench_gpu(interpret=True)
    assert result.returncode != 0 and "TRITON_INTERPRET=1 is set" in result.stderr


def test_list_names_every_section_and_the_shapes_of_docs_benchmarks():
    result = bench_gpu("--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["floor", "floor", "top-k", "saliency", "jackpot"] + [
        "matmul"] * 8
    assert "20,000,000 fp32" in lines[2] and "3 indices x 20,000,000" in lines[3]
    assert "VGG-19-BN width 1, batch 128 x 3 x 32 x 32" in lines[4]
    matmuls = [line for line in lines if line.startswith("matmul")]
    for m in (1, 16, 64, 256):
        for precision in ("fp32", "bf16"):
            assert sum(f"matmul: {m}x4096 @ 4096x4096^T {precision}:" in line for line in matmuls) == 1
    assert all("90%, 95%, 99%" in line for line in matmuls)
    with_tf32 = bench_gpu("--list", "--precisions", "tf32").stdout.splitlines()
    assert [line.split(" @ ")[0] for line in with_tf32 if line.startswith("matmul")] == [
        f"matmul: {m}x4096" for m in (1, 16, 64, 256)] and all("tf32" in line for line in with_tf32[5:])


@NO_GPU
def test_smoke_run_executes_every_section_and_judges_nothing(tmp_path):
    result = bench_gpu("--smoke", "--compile-workers", "1", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    [written] = tmp_path.glob("gpu-cpu-smoke-*.md")
    text = written.read_text()
    assert text.startswith("# panning SMOKE RUN (tiny shapes; no figure here is a GPU measurement): CPU")
    rows = [line.split(" | ") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith(("| section |", "| target |"))]
    sections = {row[0].lstrip("| ") for row in rows}
    assert {"floor", "top-k", "saliency", "matmul fwd", "matmul fwd+bwd", "jackpot"} <= sections
    timed = {(row[0].lstrip("| "), row[2]) for row in rows if len(row) == 6 and re.fullmatch(r"\d+\.\d{4}", row[3])}
    for method in ("panning triton", "torch.topk + mask (baseline)"):
        assert ("top-k", method) in timed
    for section in ("matmul fwd", "matmul fwd+bwd"):
        for method in ("dense cuBLAS", "panning masked (triton)", "panning compressed CSR (triton)"):
            assert (section, method) in timed
    for method in ("dense training step", "search step (restriction none)", "search step (restriction short)"):
        assert ("jackpot", method) in timed
    verdicts = [row[-1].rstrip(" |") for row in rows if len(row) == 3]
    targets = [row[0].lstrip("| ") for row in rows if len(row) == 3]
    assert verdicts and set(verdicts) == {"not judged (smoke run)"}
    assert any(t.startswith("top-k triton <= 2x one read") for t in targets)
    assert any(t.startswith("compressed fwd+bwd faster than dense cuBLAS, 16x48") for t in targets)
    assert any(t.startswith("jackpot step (restriction short) <= 1.3x a dense step") for t in targets)
    assert "Faster top-k here: **triton**" in text
    assert "compiled beforehand in 1 worker process(es)" in text
    assert "met" not in verdicts and "MISSED" not in text
    assert "Incomplete" not in text  # written after every section; the last write has them all
    assert "WRONG MASK" not in text
    assert result.stdout.count("table written to") == 5


@NO_GPU
def test_a_failing_section_is_reported_and_the_next_ones_still_run(tmp_path, monkeypatch):
    module = load_bench_gpu(monkeypatch)

    def broken(run, bandwidth):
        raise RuntimeError("saliency kernel exploded")

    monkeypatch.setattr(module, "bench_saliency", broken)
    monkeypatch.setattr(module, "bench_matmul", lambda run: None)  # keeps the test short
    assert module.main(["--smoke", "--output-dir", str(tmp_path)]) == 1
    [written] = tmp_path.glob("gpu-cpu-smoke-*.md")
    text = written.read_text()
    assert "- Section saliency FAILED: RuntimeError: saliency kernel exploded" in text
    assert "| jackpot | " in text and "| top-k | " in text and "| saliency | " not in text


def test_a_top_k_mask_is_verified_before_its_time_counts(monkeypatch):
    is_top_k = load_bench_gpu(monkeypatch).is_top_k
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    order = scores.argsort(descending=True)
    mask = torch.zeros(1000, dtype=torch.bool)
    mask[order[:100]] = True
    assert is_top_k(mask, scores, 100)
    assert not is_top_k(mask, scores, 99)  # a count off by one
    swapped = mask.clone()
    swapped[order[0]], swapped[order[100]] = False, True  # the right count, a wrong element
    assert not is_top_k(swapped, scores, 100)
    assert is_top_k(torch.zeros(1000, dtype=torch.bool), scores, 0)
    assert is_top_k(torch.ones(1000, dtype=torch.bool), scores, 1000)
