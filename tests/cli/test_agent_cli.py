"""`panning agent` trains, checkpoints and saves an agent with its episode log and curve; `panning prune
--method rl_panning --agent PATH` uses it; without --agent, prune says how to train one."""
from __future__ import annotations

import csv
import json

from panning.cli import main

TINY = ["--data", "synthetic", "--width", "0.1", "--iterations", "4", "--per-class", "3", "--threads", "1"]


def test_agent_train_then_prune_with_it(tmp_path, capsys):
    out = tmp_path / "agents" / "tiny"
    status = main(["agent", "--action", "train", *TINY, "--batches", "2", "--timesteps", "80", "--lanes", "2",
                   "--learning-starts", "20", "--batch-size", "16", "--checkpoint-every", "40", "--out", str(out),
                   "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "80 steps" in printed and "mean episode reward" in printed
    spec = json.loads(out.with_suffix(".json").read_text())
    assert spec["algorithm"] == "td3" and spec["network"]["model"] == "mlp" and spec["network"]["width"] == 0.1
    assert spec["format"] == "panning.agent/1" and spec["env"]["lanes"] == 2 and spec["env"]["per_class"] == 3
    assert spec["settings"]["learning_rate"] == 2e-4 and spec["settings"]["tau"] == 0.01
    with open(out.with_suffix(".episodes.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 // 4 and {int(r["length"]) for r in rows} <= {1, 2, 3, 4}
    assert out.with_suffix(".curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "agents" / "tiny.checkpoint" / "latest.json").is_file()
    for changed, message in ((["--lanes", "1"], "lanes 2 there, 1 here"),
                             (["--per-class", "4"], "per_class 3 there, 4 here"),
                             (["--curriculum-switch", "5"], "curriculum_switch 10000 there, 5 here")):
        status = main(["agent", *TINY, "--batches", "2", "--timesteps", "120", "--lanes", "2", "--learning-starts",
                       "20", "--batch-size", "16", "--checkpoint-every", "40", "--out", str(out), "--no-progress",
                       *changed])
        assert status == 2 and f"made with other settings ({message})" in capsys.readouterr().err

    masks = tmp_path / "masks.safetensors"
    status = main(["prune", "--method", "rl_panning", "--agent", str(out), "--sparsity", "0.9", *TINY,
                   "--out", str(masks)])
    assert status == 0 and masks.is_file()
    assert "sparsity 0.9" in capsys.readouterr().out


def test_prune_without_agent_says_how_to_train_one(tmp_path, capsys):
    status = main(["prune", "--method", "rl_panning", *TINY, "--out", str(tmp_path / "m.safetensors")])
    assert status == 2
    assert "panning agent --action train" in capsys.readouterr().err


def test_agent_refuses_a_bad_agent_file_and_bad_options(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "bad.safetensors").write_bytes(b"")  # both halves present: the broken JSON is what is refused
    status = main(["prune", "--method", "rl_panning", "--agent", str(tmp_path / "bad"), *TINY,
                   "--out", str(tmp_path / "m.safetensors")])
    assert status == 2 and "bad.json" in capsys.readouterr().err
    # the agent's settings are refused before any work, named by their flag; the environment's when it is made
    for flags, message in ((["--timesteps", "0"], "--timesteps: expected a positive int, got 0"),
                           (["--algorithm", "sac"], "--algorithm: expected one of td3, ddpg, ppo, got 'sac'"),
                           (["--algorithm", "ppo", "--learning-starts", "5"],
                            "settings: ppo does not accept ['learning_starts']"),
                           (["--lanes", "0"], "--lanes: expected a positive int, got 0")):
        status = main(["agent", *TINY, *flags, "--out", str(tmp_path / "a"), "--no-progress"])
        assert status == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "bad.safetensors"]  # nothing written
