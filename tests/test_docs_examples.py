"""The Python examples of docs/models.md ("Your own model": torchvision, timm, Hugging Face) and docs/data.md ("Your
own data") run as written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLES = [(page, i, block) for page in ("models.md", "data.md")
            for i, block in enumerate(re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S))]


def test_each_library_has_its_example():
    headings = re.findall(r"^## (.+)$", (DOCS / "models.md").read_text(), flags=re.M)
    assert {"torchvision", "timm", "Hugging Face transformers"} <= set(headings)
    assert sum(page == "models.md" for page, _, _ in EXAMPLES) == 3


@pytest.mark.parametrize("page, index, block", EXAMPLES, ids=[f"{p}-{i}" for p, i, _ in EXAMPLES])
def test_example_runs(page, index, block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{DOCS / page} (example {index})", "exec"), {})
    assert "spars" in capsys.readouterr().out  # each example prints what it pruned
