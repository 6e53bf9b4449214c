"""panning.checkpoint: one file per run, refused when of another kind or other settings, never unpickled."""
import datetime

import pytest
import torch

from panning import checkpoint
from panning.config import ConfigError


def test_a_checkpoint_comes_back_with_its_state(tmp_path):
    path = tmp_path / "run.pt"
    checkpoint.save(path, "training", {"lr": 0.1, "seed": 0}, {"step": 3, "weights": torch.arange(4.0)})
    state = checkpoint.load(path, "training", {"lr": 0.1, "seed": 0})
    assert state["step"] == 3 and torch.equal(state["weights"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # written atomically: no temporary left


def test_another_kind_or_other_settings_are_refused_naming_them(tmp_path):
    path = tmp_path / "run.pt"
    checkpoint.save(path, "training", {"lr": 0.1, "seed": 0}, {})
    with pytest.raises(ConfigError, match=r"run.pt' is not a jackpot search checkpoint \(format 1\)$") as refused:
        checkpoint.load(path, "jackpot search", {"lr": 0.1, "seed": 0})
    assert refused.value.field == "checkpoint"
    with pytest.raises(ConfigError, match=r"belongs to another run \(lr 0.1 there, 0.2 here; seed 0 there, 1 here\)"):
        checkpoint.load(path, "training", {"lr": 0.2, "seed": 1})


def test_a_file_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "kind": "training", "config": {}, "when": datetime.date(2026, 1, 1)}, path)
    with pytest.raises(ValueError, match=r"^checkpoint: '.*evil.pt' is not a safe checkpoint"):
        checkpoint.load(path, "training", {})
