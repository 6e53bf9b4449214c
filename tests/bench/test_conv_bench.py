"""`python -m bench --suite conv`: the per-layer suite runs and writes JSON, markdown and a plot; SparseProp's two
variants fold into the faster one and a target whose baseline did not run is left out (hand-made times)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import conv_cases
from panning.cli import bench_run as bench

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_bench_conv_writes_json_table_and_plot(tmp_path):
    command = [sys.executable, "-m", "bench", "--suite", "conv", "--quick", "--rounds", "1", "--threads", "1",
               "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "sparse-conv-1t.json").read_text())
    groups = {b["group"] for b in data["benchmarks"]}
    assert {case.group for case in conv_cases.cases(True)} == groups
    for group in groups:
        variants = {b["extra_info"]["variant"] for b in data["benchmarks"] if b["group"] == group}
        assert {"ours", "dense"} <= variants, group
    table = (tmp_path / "sparse-conv.md").read_text()
    assert "load average" in table and "| VGG-19 16->16 8x8 k3 s1 b16 95% fwd+bwd" in table
    assert ("not measured" in table) == bool(conv_cases.MISSING)
    assert (tmp_path / "sparse-conv.png").read_bytes()[:4] == b"\x89PNG"


def test_row_folds_sparseprop_and_drops_targets_without_a_baseline():
    layer = conv_cases.Layer("VGG-19", 8, 8, (4, 4))
    case = bench.Case("c", ("ours", "dense", *conv_cases.SPARSEPROP), lambda: {},
                      (bench.Target("SparseProp", 1.0), bench.Target("dense", 3.0)))
    r = conv_cases.row(case, {"ours": 1.0, "dense": 2.0, "SparseProp": 4.0, "SparseProp width": 1.5})
    assert r["ratios"] == {"dense": 2.0, "SparseProp": 1.5}
    assert [t["met"] for t in r["targets"]] == [True, False]
    r = conv_cases.row(case, {"ours": 1.0, "dense": 4.0})
    assert r["ratios"] == {"dense": 4.0} and [t["target"] for t in r["targets"]] == [">= 3x dense"]
    assert layer.sparseprop() == conv_cases.SPARSEPROP
    assert conv_cases.Layer("cnn1d", 1, 2, (9,)).sparseprop() == ()
