"""`python -m bench`: the pytest-benchmark suite runs and the one command writes JSON, markdown and a plot."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_python_m_bench_writes_json_table_and_plot(tmp_path):
    command = [sys.executable, "-m", "bench", "--quick", "--rounds", "1", "--threads", "1", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "cpu-kernels-1t.json").read_text())
    groups = {b["group"] for b in data["benchmarks"]}
    assert any(g.startswith("saliency") for g in groups) and any(g.startswith("sparse_linear") for g in groups)
    for group in groups:  # every group puts ours beside at least one other way
        variants = {b["extra_info"]["variant"] for b in data["benchmarks"] if b["group"] == group}
        assert "ours" in variants and len(variants) >= 2, group
    assert data["machine_info"]["panning"]["threads"] == 1
    table = (tmp_path / "cpu-kernels.md").read_text()
    assert "load average" in table and "| saliency" in table
    assert (tmp_path / "cpu-kernels.png").read_bytes()[:4] == b"\x89PNG"


def test_python_m_bench_train_step_writes_json_and_table(tmp_path):
    command = [sys.executable, "-m", "bench.train_step", "--quick", "--rounds", "1", "--threads", "1", "--out",
               str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "train-step-1t.json").read_text())
    variants = {b["extra_info"]["variant"] for b in data["benchmarks"]}
    assert {"dense", "masked", "compressed", "auto"} <= variants
    assert {b["extra_info"]["kind"] for b in data["benchmarks"]} == {"step", "latency"}
    table = (tmp_path / "train-step.md").read_text()
    assert "| step | linear | 98% |" in table and "| latency | linear | 98% |" in table and "load average" in table


def test_the_cost_table_is_the_fit_of_the_committed_measurements():
    """panning/nn/cost.py's rows are what bench/fit_cost.py fits to the steps kept under bench/results/."""
    from panning.nn import cost

    for threads, row in cost.MEASURED.items():
        rows = ROOT / "bench" / "results" / f"cost-model-{threads}t.json"
        done = subprocess.run([sys.executable, "bench/fit_cost.py", "--threads", str(threads), "--rows", str(rows)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        fitted = done.stdout.strip().splitlines()[-1].strip()
        assert fitted.startswith(f"{threads}: Coefficients(")
        values = dict(item.split("=") for item in fitted.split("(", 1)[1].rstrip("),").split(", "))
        for name, value in values.items():
            assert getattr(row, name) == float(value), name


def test_the_conv_cost_table_is_the_fit_of_the_committed_measurements():
    """panning/nn/cost.py's convolution rows are what `bench/fit_cost.py --layer conv` fits to the calls kept under
    bench/results/, and they pick the faster kernel of nearly every measured call where one is clearly faster."""
    from panning.nn import cost

    for threads in sorted({threads for threads, _ in cost.MEASURED_CONV}):
        path = ROOT / "bench" / "results" / f"cost-model-conv-{threads}t.json"
        done = subprocess.run([sys.executable, "bench/fit_cost.py", "--layer", "conv", "--threads", str(threads),
                               "--rows", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        fitted = [line.strip() for line in done.stdout.splitlines() if "ConvCoefficients(" in line]
        assert len(fitted) == 2
        for line in fitted:
            key, _, arguments = line.partition(": ConvCoefficients(")
            row = cost.MEASURED_CONV[(threads, key.split('"')[1])]
            for item in arguments.rstrip("),").split(", "):
                name, value = item.split("=")
                assert getattr(row, name) == float(value), (key, name)
        rows = json.loads(path.read_text())["rows"]
        clear = [r for r in rows if max(r["dense"], r["sparse"]) >= 2 * min(r["dense"], r["sparse"])]
        wrong = [r for r in clear if (r["sparse"] < r["dense"]) != cost.sparse_conv_wins(
            cost.ConvCall(r["batch"], r["in_elements"], r["laid_out"], r["out"], r["fan_in"], r["positions"],
                          r["kept"], r["direct"]), threads,
            r["kind"] == "training", "cpu")]
        assert len(clear) >= len(rows) / 3 and len(wrong) <= len(clear) / 20, (len(clear), wrong)
