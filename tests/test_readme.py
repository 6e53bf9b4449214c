"""The README's Python example runs as written, with its budgets (epochs, steps, sizes) cut to keep the test short."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: Only the budgets shrink; every call, argument name and value that is not a budget stays as the README has it.
SMALLER = [(r"epochs=\d+", "epochs=1"), (r"data=bundle\)", "data=bundle, iterations=3)"),
           (r"20_000_000", "20_000"), (r"2_000_000", "2_000")]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    (block,) = python_blocks(README.read_text())
    for pattern, budget in SMALLER:
        assert re.search(pattern, block), f"the README example no longer has {pattern!r}: update this test"
        block = re.sub(pattern, budget, block)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "effective sparsity" in out and "jackpot test accuracy" in out
    assert (tmp_path / "masks.safetensors").is_file()
    assert abs(namespace["masks"].sparsity - 0.95) < 1e-3 and abs(namespace["result"].masks.sparsity - 0.9) < 1e-2
    assert int(namespace["mask"].sum()) == 2_000
