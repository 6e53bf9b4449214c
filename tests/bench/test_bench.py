"""`panning bench --quick`: every case measured, ratios computed from real timings, the table written; the
targets' pass/fail rule checked on hand-made times."""
from __future__ import annotations

import torch

from panning.cli import bench_run as bench, main


def test_quick_bench_measures_every_kernel(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert main(["bench", "--quick", "--repeats", "1", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    for group in ("topk_mask", "saliency", "masked_linear fwd+bwd", "sparse_linear fwd", "load average"):
        assert group in text
    assert f", {torch.get_num_threads()} thread(s), " in text.splitlines()[0]
    assert ", 1 thread(s), " in text.splitlines()[0]  # one thread per process unless --threads says otherwise
    assert out.read_text().strip() == text.strip()


def test_rows_carry_consistent_ratios():
    table = bench.rows(quick=True, repeats=1)
    assert [r["group"] for r in table] == [case.group for case in bench.cases(quick=True)]
    for r in table:
        times = r["variants_ms"]
        assert all(t > 0 for t in times.values())
        for name, ratio in r["ratios"].items():
            assert abs(ratio - times[name] / times["ours"]) < 1e-9
        if "floor" in times:
            assert abs(r["ours_vs_floor"] - times["ours"] / times["floor"]) < 1e-9


def test_targets_compare_the_right_way_round():
    faster = bench.Target("dense", 6)
    assert faster.met(ours=1.0, base=6.0) and not faster.met(ours=1.0, base=5.9)
    floor = bench.Target("floor", 2)
    assert floor.met(ours=2.0, base=1.0) and not floor.met(ours=2.1, base=1.0)
    case = bench.Case("g", ("ours", "dense", "floor"), dict, (faster, floor))
    r = bench.row(case, {"ours": 0.001, "dense": 0.007, "floor": 0.0004})
    assert [t["met"] for t in r["targets"]] == [True, False]
    assert abs(r["ratios"]["dense"] - 7.0) < 1e-9 and abs(r["ours_vs_floor"] - 2.5) < 1e-9
