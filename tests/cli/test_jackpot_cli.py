"""`panning jackpot` from a pre-trained checkpoint: table, files, resume; weight loading formats."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from panning import data as datasets, models
from panning.cli import main
from panning.masks import Masks


def pretrained(tmp_path):
    bundle = datasets.load("synthetic")
    torch.manual_seed(7)
    model = models.build("cnn1d", bundle.input_shape, bundle.num_classes)
    path = tmp_path / "dense.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)  # the shape of a panning training checkpoint
    return model, path


def test_cli_searches_a_checkpoint_and_reports(tmp_path, capsys):
    model, path = pretrained(tmp_path)
    args = ["jackpot", "--data", "synthetic", "--model", "cnn1d", "--weights", str(path), "--sparsity", "0.7",
                 "--epochs", "2", "--batch-size", "64", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for line in ("dense accuracy", "magnitude-pruned accuracy", "jackpot accuracy", "pairs proposed", "density",
                 "(dense)"):
        assert line in out
    run_dir = next((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    masks = Masks.load(run_dir / "masks.safetensors")
    assert list(masks) == ["0.weight", "2.weight", "4.weight"] and masks.sparsity == pytest.approx(0.7, abs=1e-2)
    assert summary["jackpot_acc"] == summary["history"][-1]["test_acc"] and len(summary["history"]) == 2
    assert (run_dir / "search.png").stat().st_size > 0 and (run_dir / "scores.safetensors").exists()
    # A second run finds the finished checkpoint and reports the same search without redoing it.
    assert main(args) == 0
    assert json.loads((run_dir / "summary.json").read_text())["history"] == summary["history"]


def test_load_weights_reads_state_dicts_and_refuses_misfits(tmp_path):
    model, path = pretrained(tmp_path)
    other = models.build("cnn1d", (1, 16), 4)
    models.load_weights(other, path)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    models.load_weights(models.build("cnn1d", (1, 16), 4), tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        models.load_weights(models.build("cnn1d", (1, 16), 3), path)
    with pytest.raises(ValueError, match="no file"):
        models.load_weights(other, tmp_path / "missing.pt")


def test_runs_differing_in_lr_weight_decay_or_batch_size_get_their_own_folders(tmp_path):
    _, path = pretrained(tmp_path)
    base = ["jackpot", "--data", "synthetic", "--model", "cnn1d", "--weights", str(path), "--sparsity", "0.7",
            "--steps", "3", "--batch-size", "64", "--out", str(tmp_path / "runs"), "--no-progress", "--no-monitor"]
    variants = [[], ["--lr", "0.05"], ["--weight-decay", "0"], ["--batch-size", "32"], ["--preset", "authors"]]
    for extra in variants:
        assert main(base + extra) == 0  # each would have refused the first run's checkpoint if they collided
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(folders) == len(variants)
    authors = json.loads(next(p for p in (tmp_path / "runs").iterdir() if "-authors-" in p.name)
                         .joinpath("summary.json").read_text())
    assert (authors["init"], authors["restriction"], authors["bn_reestimation"], authors["steps"]) == \
        ("flat", "none", False, 3)
