"""`panning demo` end to end on a tiny budget: the table, the files, the exact sparsity of every method."""
from __future__ import annotations

import json

import pytest

from panning.cli import main
from panning.masks import Masks


def test_demo_compares_methods_and_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--epochs", "1", "--methods", "random,panning", "--iterations", "2", "--sparsity", "0.8",
                 "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0
    text = capsys.readouterr().out
    for word in ("dense", "random", "panning", "effective sparsity", "test acc"):
        assert word in text
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["dense", "random", "panning"]
    for row in rows[1:]:
        assert row["sparsity"] == pytest.approx(0.8, abs=1e-3)
        assert row["effective"] >= row["sparsity"] - 1e-9
        assert f"{100 * row['acc']:.2f}%" in text  # the table reports what results.json records
        assert (row["acc"] * 1000) == pytest.approx(round(row["acc"] * 1000))  # a count of the 1000 test samples
        assert Masks.load(out / f"masks-{row['method']}.safetensors").sparsity == pytest.approx(row["sparsity"])
    assert (out / "demo.png").stat().st_size > 0


def test_demo_rejects_unknown_methods(capsys):
    assert main(["demo", "--methods", "random,psychic"]) == 2
    assert "methods" in capsys.readouterr().err
