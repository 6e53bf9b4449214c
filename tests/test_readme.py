"""The README's Python example runs as written, with its budgets (epochs, steps, sizes) cut to keep the test short."""
from __future__ import annotations

import os
import re
import subprocess
import sys
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


#: The command line session's budgets, cut the same way: every command, data set, method and file stays.
SMALLER_COMMANDS = [(r"--epochs \d+", "--epochs 1"), (r"--steps \d+", "--steps 4"),
                    (r"--train$", "--train --epochs 1 --iterations 3"),
                    (r"^panning train (.*)$", r"panning train \1 --epochs 1"),
                    (r"^(torchrun .*)$", r"\1 --epochs 1"),
                    (r"^panning demo$", "panning demo --quick --epochs 1 --iterations 2 --jackpot-epochs 1")]


def session(text: str) -> list[str]:
    """The commands of the README's command-line session (the bash block that starts with `panning train`)."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if b.startswith("panning train"))
    return [" ".join(line.split("#")[0].split()) for line in block.splitlines() if line.strip()]


def test_readme_command_line_session_runs_top_to_bottom(tmp_path, monkeypatch):
    """Each command in order, in one folder, as a user types them: every one ends with exit status 0 (the
    jackpot runs, with and without pre-trained weights and processes, each get their own run folder)."""
    commands = session(README.read_text())
    assert commands[-1] == "panning demo" and sum(c.startswith("torchrun") for c in commands) == 1
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    for command in commands:
        for pattern, budget in SMALLER_COMMANDS:
            command = re.sub(pattern, budget, command)
        argv = command.split() + (["--threads", "1"] if "evaluate" not in command else [])
        if argv[0] == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", *argv[1:]]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    runs = sorted(p.name for p in (tmp_path / "runs" / "jackpot").iterdir() if p.is_dir())
    assert len(runs) == 3 and sum("-from" in r and r.endswith("-np2") for r in runs) == 1
