"""Faults a user meets on the command line, round 2: options that only a late step used to catch (or none), a
run whose loss becomes NaN, and a disk that fills up. Bad options end in one line and exit status 2 before any
work; a failed write or a diverged run in one line and exit status 1, losing nothing that was kept."""
from __future__ import annotations

import os

import pytest
from safetensors import SafetensorError

from panning.cli import main
from panning.pbt.rl.agent import AGENTS

from .test_bad_input import error_line


@pytest.mark.parametrize("argv, message", [
    (["prune", "--epochs", "3"], "--epochs: has no effect without --train; give both or neither"),
    (["jackpot", "--finetune-lr", "0.1"], "--finetune-lr: has no effect without --finetune-epochs"),
    (["prune", "--seed", "100000000000000000000000"], "--seed: expected an int in [0, 2**32), got 1000"),
    (["train", "--seed", "-1"], "--seed: expected an int in [0, 2**32), got -1"),
    (["jackpot", "--seed", "-1"], "--seed: expected an int in [0, 2**32), got -1"),
    (["agent", "--seed", "-1"], "--seed: expected an int in [0, 2**32), got -1"),
    (["demo", "--seed", "-1"], "--seed: expected an int in [0, 2**32), got -1"),
    (["agent", "--iterations", "0"], "--iterations: expected a positive int, got 0"),
    (["agent", "--batches", "0"], "--batches: expected a positive int, got 0"),
    (["agent", "--per-class", "0"], "--per-class: expected an int in [1, "),
    (["train", "--width", "1000"], "--width: 1000 makes cnn1d 3,751,450,010 parameters"),
    (["prune", "--method", "rl_panning", "--agent", str(AGENTS / "cnn1d-w4-mnist1d"), "--width", "-1"],
     "--width: expected a number in (0, inf], got -1.0"),  # panning.models.build's check, before the agent's fit
    (["prune", "--data", "digits", "--method", "snip", "--per-class", "100000"],
     "--per-class: expected an int in [1, 139] (the samples of the smallest class, "),
    (["agent", "--data", "digits", "--per-class", "1000"], "--per-class: expected an int in [1, 139] "),
    (["train", "--momentum", "0.5"], "--momentum: has no effect with the adam optimizer (the recipe's); give "
                                     "--optimizer sgd to use it"),
    (["train", "--data-dir", "."], "--data-dir: mnist1d would ignore data_dir: only the CIFAR data sets are read "
                                   "from a folder"),
    (["demo", "--methods", "snip", "--agent", str(AGENTS / "cnn1d-w4-mnist1d")],
     "--agent: has no effect without rl_panning in --methods"),
    (["prune", "--threads", str((os.cpu_count() or 1) + 1)],
     f"--threads: expected a thread count in [1, {os.cpu_count()}] (this machine's CPUs), got {os.cpu_count() + 1}"),
])
def test_options_that_were_checked_late_or_never_are_checked_before_work(argv, message, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv] if "--threads" in argv else [*argv, "--threads", "1"]) == 2
    assert message in error_line(capsys, argv[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, message", [
    ("out: null\n", "option 'out': expected a value, got None (leave it out for its default, masks.safetensors)"),
    ("sparsity: null\n", "option 'sparsity': expected a number, got None (leave it out for its default, 0.9)"),
])
def test_a_null_in_a_config_is_refused_for_an_option_with_a_default(text, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(text)
    assert main(["prune", "--config", "c.yaml"]) == 2
    assert message in error_line(capsys, "prune")


def test_save_and_checkpoint_naming_one_file_are_refused(tmp_path, capsys):
    run = tmp_path / "run.pt"
    run.write_bytes(b"an earlier checkpoint")
    assert main(["train", "--save", str(run), "--checkpoint", str(tmp_path / "." / "run.pt")]) == 2
    assert "--save: the same file as --checkpoint" in error_line(capsys, "train")
    assert run.read_bytes() == b"an earlier checkpoint"


TRAIN = ["train", "--data", "digits", "--epochs", "1", "--threads", "1", "--no-progress"]


def test_a_diverged_run_stops_and_overwrites_nothing(tmp_path, capsys):
    model, checkpoint = tmp_path / "model.safetensors", tmp_path / "run.pt"
    model.write_bytes(b"a good model")
    assert main([*TRAIN, "--lr", "1e6", "--save", str(model), "--checkpoint", str(checkpoint)]) == 1
    line = error_line(capsys, "train")
    assert "the training loss became nan in epoch 1" in line and "--save was not written" in line
    assert model.read_bytes() == b"a good model" and not checkpoint.exists()


def test_a_full_disk_at_save_keeps_the_trained_model_in_the_checkpoint(tmp_path, capsys, monkeypatch):
    """The save after training fails as a full disk would (safetensors' own error); the line names the file, the
    cause and where the trained model is; the same command, with space again, writes it from the checkpoint."""
    model, checkpoint = tmp_path / "out" / "model.safetensors", tmp_path / "run.pt"
    (tmp_path / "out").mkdir()
    full = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    with monkeypatch.context() as patch:
        patch.setattr("panning.models.io.save_file", lambda *a, **k: (_ for _ in ()).throw(full))
        assert main([*TRAIN, "--save", str(model), "--checkpoint", str(checkpoint)]) == 1
    line = error_line(capsys, "train")
    assert line == (f"panning train: error: cannot write {str(model)!r}: no space left on the device; the trained "
                    f"model is in the checkpoint {str(checkpoint)!r}: run the same command again, with space, to "
                    "write it")
    assert list((tmp_path / "out").iterdir()) == []
    assert main([*TRAIN, "--save", str(model), "--checkpoint", str(checkpoint)]) == 0
    assert "model saved to" in capsys.readouterr().out and model.is_file()


def test_a_full_disk_during_an_agent_checkpoint_leaves_no_snapshot_or_folder(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("panning.pbt.rl.checkpoint.save_file", full)
    out = tmp_path / "agents" / "a"
    assert main(["agent", "--data", "synthetic", "--width", "0.1", "--iterations", "4", "--per-class", "3",
                 "--batches", "2", "--timesteps", "40", "--learning-starts", "20", "--batch-size", "16",
                 "--checkpoint-every", "40", "--out", str(out), "--no-progress", "--threads", "1"]) == 1
    line = error_line(capsys, "agent")
    assert "cannot write" in line and "step-000000040" in line and "no space left on the device" in line
    assert list(tmp_path.iterdir()) == []


def test_a_sparsity_that_keeps_no_weight_is_refused_before_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--jackpot-sparsity", "0.9999999", "--out", str(out)]) == 2
    assert ("--jackpot-sparsity: 0.9999999 keeps none of the 60,500 weights (sparsity 1 removes every weight); at "
            "most 0.999992 keeps one") in error_line(capsys, "demo")
    assert main(["jackpot", "--data", "digits", "--sparsity", "0.999999", "--out", str(out)]) == 2
    assert "--sparsity: 0.999999 keeps none of the 64,800 weights" in error_line(capsys, "jackpot")
    assert main(["prune", "--data", "digits", "--sparsity", "0.999999", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "--sparsity: 0.999999 keeps none of the 65,440 weights" in error_line(capsys, "prune")
    assert list(tmp_path.iterdir()) == []


def test_masks_files_say_what_they_were_made_for_and_keep_something(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from panning.masks import Masks

    masks = tmp_path / "masks.safetensors"
    assert main(["prune", "--data", "mnist1d", "--method", "magnitude", "--out", str(masks)]) == 2 - 2
    capsys.readouterr()
    assert Masks.load(masks).about == {"model": "cnn1d", "width": 1.0, "data": "mnist1d"}
    assert main([*TRAIN, "--masks", str(masks)]) == 2
    assert "--masks: made for cnn1d x1 for mnist1d; this model is cnn2d x1 for digits" in error_line(capsys, "train")
    save_file({}, str(tmp_path / "empty.safetensors"))
    assert main([*TRAIN, "--masks", str(tmp_path / "empty.safetensors")]) == 2
    assert "--masks: '" in (line := error_line(capsys, "train")) and "empty.safetensors' holds no masks" in line
    zero = Masks({name: torch.zeros_like(m) for name, m in Masks.load(masks).items()}, Masks.load(masks).about)
    zero.save(tmp_path / "zero.pt")
    assert main(["train", "--epochs", "1", "--masks", str(tmp_path / "zero.pt"), "--no-progress"]) == 2
    assert "--masks: keep none of the 5,125 weights they cover (sparsity 1" in error_line(capsys, "train")


def test_weights_of_another_model_are_named_by_what_the_file_holds(tmp_path, capsys):
    weights = tmp_path / "digits.safetensors"
    assert main([*TRAIN, "--save", str(weights)]) == 0
    capsys.readouterr()
    assert main(["jackpot", "--data", "mnist1d", "--weights", str(weights), "--out", str(tmp_path / "j")]) == 2
    line = error_line(capsys, "jackpot")
    assert f"--weights: {str(weights)!r} does not fit the model (it holds cnn2d x1 for digits): tensors: " in line
    assert len(line) < 400 and not (tmp_path / "j").exists()


def test_an_agent_of_an_earlier_format_or_with_truncated_weights_is_refused_before_work(tmp_path, capsys):
    import json
    import shutil

    from panning.pbt.rl.agent import AGENTS

    shipped = AGENTS / "cnn1d-w4-mnist1d"
    spec = json.loads(shipped.with_name(shipped.name + ".json").read_text())
    del spec["network"]
    (tmp_path / "old.json").write_text(json.dumps(spec))
    shutil.copy(shipped.with_name(shipped.name + ".safetensors"), tmp_path / "old.safetensors")
    out = tmp_path / "m.safetensors"
    argv = ["prune", "--method", "rl_panning", "--width", "4", "--out", str(out), "--agent"]
    assert main([*argv, str(tmp_path / "old")]) == 2
    assert ("old.json': not a saved panning agent (an earlier format that does not say which network"
            in error_line(capsys, "prune"))
    shutil.copy(shipped.with_name(shipped.name + ".json"), tmp_path / "cut.json")
    (tmp_path / "cut.safetensors").write_bytes(shipped.with_name(shipped.name + ".safetensors").read_bytes()[:3000])
    assert main([*argv, str(tmp_path / "cut")]) == 2
    assert "--agent: '" in (line := error_line(capsys, "prune")) and "not a readable safetensors file" in line
    assert not out.exists()


def test_a_batch_that_does_not_split_over_the_processes_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["jackpot", "--batch-size", "3", "--out", str(tmp_path / "j")]) == 2
    assert "--batch-size: 3 does not split evenly over 2 processes" in error_line(capsys, "jackpot")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_when_the_agent_is_saved_says_where_it_is_kept(tmp_path, capsys, monkeypatch):
    import errno
    import os

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "agents" / "a"
    argv = ["agent", "--data", "synthetic", "--width", "0.1", "--iterations", "4", "--per-class", "3", "--batches",
            "2", "--timesteps", "40", "--learning-starts", "20", "--batch-size", "16", "--checkpoint-every", "40",
            "--out", str(out), "--no-progress", "--threads", "1"]
    with monkeypatch.context() as patch:
        patch.setattr("panning.io.save_file", full)  # the agent's weights; its checkpoint writes on
        assert main(argv) == 1
    line = error_line(capsys, "agent")
    assert line.startswith(f"panning agent: error: cannot write {str(out) + '.safetensors'!r}: no space left")
    assert line.endswith(f"the trained agent is in the checkpoint {str(out) + '.checkpoint'!r}: run the same "
                         "command again, with space, to write it")
    assert main(argv) == 0 and (tmp_path / "agents" / "a.safetensors").is_file()


def test_an_output_whose_disk_is_too_small_is_refused_before_work(tmp_path, capsys, monkeypatch):
    """The size the command will write (the model, its checkpoint, the masks) against the disk's free space."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(1 << 20, (1 << 20) - 40_000, 40_000))
    assert main([*TRAIN, "--save", str(tmp_path / "m.safetensors")]) == 2
    assert "--save: the disk of" in (line := error_line(capsys, "train")) and "has 40,000 bytes free" in line
    assert main(["prune", "--data", "digits", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert f"needs about {65_440 + 16 * 1024:,}" in error_line(capsys, "prune")
    assert list(tmp_path.iterdir()) == []
