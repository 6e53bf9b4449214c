"""`panning bench --quick`: every row measured, ratios computed from real timings, the table written."""
from __future__ import annotations

from panning import bench
from panning.cli import main


def test_quick_bench_measures_every_kernel(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert main(["bench", "--quick", "--repeats", "1", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    for op in ("topk_mask global", "saliency", "masked_linear fwd+bwd", "sparse_linear fwd", "copy bandwidth"):
        assert op in text
    assert out.read_text().strip() == text.strip()


def test_rows_carry_consistent_ratios():
    for row in bench.rows(quick=True, repeats=1):
        if "value" in row:
            continue
        assert row["ours_ms"] > 0 and row["baseline_ms"] > 0
        assert abs(row["ratio"] - row["baseline_ms"] / row["ours_ms"]) < 1e-9
