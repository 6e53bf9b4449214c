"""scripts/gpu_check.sh off a GPU: its dry run passes every check that needs no GPU and fails on what is missing, a
failing stage does not stop the next, a stage over its budget is stopped, and the exit status and summary say so.

The GPU run itself is in docs/benchmarks.md ("GPU check").
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the stages would really run")


def gpu_check(*args: str, python: str = sys.executable, **env: str) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("OUT", "TRITON_INTERPRET") and not name.startswith(("GPU_CHECK_", "PYTEST_"))}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env=environment | {"PYTHON": python} | env)


def test_dry_run_lists_the_stages_and_passes_every_check_that_needs_no_gpu(tmp_path):
    # One run for both outcomes: every check passes but the wheel folder's, which is absent on purpose.
    result = gpu_check("--dry-run", "--wheels", str(tmp_path / "absent"))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    stages = [line.split()[0] for line in lines[lines.index("stages (budget in seconds, log, command):") + 1:
                                                 lines.index("checks:")]]
    assert stages == ["setup", "env", "build", "import", "tests", "bench"]
    budgets = {line.split()[0]: int(line.split()[1].rstrip("s")) for line in lines
               if line.startswith("  ") and line.split()[0] in stages}
    assert sum(budgets.values()) > 480 and "total budget 480s" in lines[0]  # stage caps, cut to the 8-minute total
    doc = (ROOT / "docs" / "benchmarks.md").read_text().split("## GPU check")[1].split("\n## ")[0]
    documented = {cells[0].lstrip("| "): int(cells[1]) for cells in (row.split(" | ") for row in doc.splitlines())
                  if len(cells) > 3 and cells[0].lstrip("| ") in stages}
    assert documented == budgets, "docs/benchmarks.md's GPU check table differs from the script's budgets"
    checks = [line for line in lines if line.startswith("  ok ") or line.startswith("  FAILED")]
    assert [line for line in checks if "FAILED" in line] == [f"  FAILED  wheel folder {tmp_path / 'absent'}"]
    text = result.stdout
    assert "ok      bash syntax" in text and "ok      file tests/nn/test_nn_cuda.py" in text
    assert "bench/bench_gpu.py imports and lists its cases: 13 cases" in text
    collected = next(line for line in checks if "the pytest selection collects" in line)
    assert int(collected.split(": ")[-1].split()[0]) > 100


def test_bad_usage_exits_2():
    result = gpu_check("--stages", "env,nonsense")
    assert result.returncode == 2 and "unknown stage 'nonsense'" in result.stderr
    assert gpu_check("--frobnicate").returncode == 2


@NO_GPU
def test_a_failing_stage_does_not_stop_the_next_and_sets_the_exit_status(tmp_path):
    result = gpu_check("--out", str(tmp_path), "--stages", "env,import")
    assert result.returncode == 1
    assert "env: FAILED, exit 1" in result.stdout and "import: FAILED, exit 1" in result.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert "| env | FAILED (exit 1) |" in summary and "| import | FAILED (exit 1) |" in summary
    assert "| device | no CUDA GPU visible to torch |" in summary
    assert "Failed stages: env, import." in summary
    assert "no CUDA GPU visible to torch" in (tmp_path / "setup.log").read_text()
    assert "cuda: NOT available" in (tmp_path / "build.log").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.log", "setup.log", "summary.md"]


def test_a_stage_over_its_budget_is_stopped_and_the_next_still_runs(tmp_path):
    # A Python that hangs on `gpu_check.py env` and is the real one otherwise.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\ncase "$*" in *"gpu_check.py env"*) sleep 60;; esac\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    out = tmp_path / "out"
    start = time.monotonic()
    result = gpu_check("--out", str(out), "--stages", "env,import", python=str(python), GPU_CHECK_ENV_S="2")
    assert time.monotonic() - start < 50
    assert result.returncode == 1
    summary = (out / "summary.md").read_text()
    assert re.search(r"\| env \| TIMED OUT \| [23] \| 2 \| setup.log \|", summary), summary
    assert "| import |" in summary and "backends" in (out / "build.log").read_text()  # the next stage ran


def test_summary_reads_the_stages_junit_and_the_benchmark_targets(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite time="12.5">'
        '<testcase classname="tests.ops.test_a" name="test_ok"/>'
        '<testcase classname="tests.ops.test_a" name="test_bad"><failure message="assert 1 == 2&#10;more"/>'
        '</testcase><testcase classname="tests.ops.test_b" name="test_s1"><skipped message="no nvcc"/></testcase>'
        '<testcase classname="tests.ops.test_b" name="test_s2"><skipped message="no nvcc"/></testcase>'
        '</testsuite></testsuites>')
    (tmp_path / "gpu-nvidia-h100-2026-12-07.md").write_text(
        "# panning GPU benchmark\n\n**Incomplete**: still to measure when this was written: matmul.\n\n"
        "## Targets\n\n| target | figure | verdict |\n|---|---|---|\n| top-k cuda <= 2x | 1.5x | met |\n\n"
        "## All rows\n\n| section | case |\n")
    stages = tmp_path / "stages.tsv"
    stages.write_text("env\t0\t3\t30\tsetup.log\ntests\t1\t40\t150\ttests.log\nbench\t124\t270\t270\tbench.log\n")
    assert module.summary(tmp_path, stages) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "| env | ok | 3 | 30 | setup.log |" in text and "| tests | FAILED (exit 1) | 40 | 150 | tests.log |" in text
    assert "| bench | TIMED OUT | 270 | 270 | bench.log |" in text and "Failed stages: tests, bench." in text
    assert "4 tests in 12 s: 1 passed, 1 failed, 0 errors, 2 skipped." in text
    assert "- failure: `tests.ops.test_a::test_bad`: assert 1 == 2" in text and "- no nvcc: 2" in text
    assert "**Incomplete**: still to measure when this was written: matmul." in text
    assert "| top-k cuda <= 2x | 1.5x | met |" in text and "| section | case |" not in text
