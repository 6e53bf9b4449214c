"""Bad input as a user meets it on the command line: one line naming the option, exit status 2, before any work
(no dense training, no run folder, no stray files)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from panning import data, models
from panning.cli import main
from panning.masks import Masks

ROOT = Path(__file__).resolve().parents[2]


def error_line(capsys, command: str) -> str:
    """The one line a failed command printed on stderr."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"panning {command}: error: ")
    assert "Traceback" not in err
    return err


class Evil:
    """A pickle that would run a shell command when unpickled."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


def bad_files(folder: Path) -> dict[str, Path]:
    """A checkpoint broken in every way a user meets: truncated, empty, garbage (torch and safetensors), and a
    pickle that wants to run code."""
    bundle = data.load("synthetic")
    model = models.build("cnn1d", bundle.input_shape, bundle.num_classes)
    good_pt, good_st = folder / "good.pt", folder / "good.safetensors"
    torch.save(model.state_dict(), good_pt)
    save_file(model.state_dict(), str(good_st))
    files = {
        "truncated.pt": good_pt.read_bytes()[: good_pt.stat().st_size // 2],
        "truncated.safetensors": good_st.read_bytes()[:100],
        "empty.pt": b"",
        "empty.safetensors": b"",
        "garbage.pt": bytes(range(256)) * 4,
        "garbage.safetensors": b"\x00" * 64 + b"not a tensor file",
        "malicious.pt": pickle.dumps(Evil()),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in files}


EXPECTED = {
    "truncated.pt": "is truncated or damaged",
    "truncated.safetensors": "is neither a torch file nor a readable safetensors file",
    "empty.pt": "is empty",
    "empty.safetensors": "is empty",
    "garbage.pt": "is neither a torch file nor a readable safetensors file",
    "garbage.safetensors": "is neither a torch file nor a readable safetensors file",
    "malicious.pt": "is not a safe checkpoint",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_jackpot_refuses_broken_weights_before_any_work(name, tmp_path, capsys):
    path = bad_files(tmp_path)[name]
    out = tmp_path / "runs"
    assert main(["jackpot", "--data", "synthetic", "--model", "cnn1d", "--weights", str(path), "--epochs", "1",
                 "--out", str(out), "--no-progress"]) == 2
    err = error_line(capsys, "jackpot")
    assert f"--weights: '{path}' {EXPECTED[name]}" in err
    assert "weights_only" not in err  # never relays torch's advice to unpickle anyway
    assert not out.exists()


@pytest.mark.parametrize("name", ["truncated.safetensors", "garbage.pt", "malicious.pt", "empty.pt"])
def test_train_refuses_a_broken_checkpoint(name, tmp_path, capsys):
    path = bad_files(tmp_path)[name]
    before = path.read_bytes()
    assert main(["train", "--data", "synthetic", "--model", "mlp", "--epochs", "1", "--checkpoint", str(path),
                 "--no-progress"]) == 2
    assert f"--checkpoint: '{path}' {EXPECTED[name]}" in error_line(capsys, "train")
    assert path.read_bytes() == before  # not overwritten by a fresh run


def test_jackpot_refuses_weights_of_another_network(tmp_path, capsys):
    bundle = data.load("synthetic")
    path = tmp_path / "mlp.pt"
    torch.save(models.build("mlp", bundle.input_shape, bundle.num_classes).state_dict(), path)
    assert main(["jackpot", "--data", "synthetic", "--model", "cnn1d", "--weights", str(path),
                 "--out", str(tmp_path / "runs")]) == 2
    assert "--weights: " in (err := error_line(capsys, "jackpot")) and "does not fit the model" in err


@pytest.mark.parametrize("command", [
    ["jackpot", "--data", "synthetic", "--model", "cnn1d"],
    ["prune", "--data", "synthetic", "--method", "magnitude"],
    ["demo", "--epochs", "1"],
])
@pytest.mark.parametrize("sparsity", ["1", "1.0", "1.5", "-0.1", "nan"])
def test_every_command_refuses_sparsity_outside_0_1_the_same_way(command, sparsity, tmp_path, capsys):
    out = tmp_path / "out"
    target = out if command[0] != "prune" else tmp_path / "masks.safetensors"
    assert main([*command, "--sparsity", sparsity, "--out", str(target)]) == 2
    err = error_line(capsys, command[0])
    assert f"--sparsity: expected a number in [0, 1), got {float(sparsity)!r}" in err
    assert ("(sparsity 1 removes every weight)" in err) == (float(sparsity) == 1.0)
    assert not target.exists()


@pytest.mark.parametrize("option, value, message", [
    ("--epochs", "0", "--epochs: expected a positive int, got 0"),
    ("--batch-size", "0", "--batch-size: expected a positive int, got 0"),
    ("--lr", "-1", "--lr: expected a number in (0, inf], got -1.0"),
    ("--threads", "0", f"--threads: expected a thread count in [1, {os.cpu_count()}] (this machine's CPUs), got 0"),
    ("--width", "0", "--width: expected a number in (0, inf], got 0.0"),
    ("--init", "psychic", "--init: expected one of magnitude, flat, random, got 'psychic'"),
    ("--momentum", "1", "--momentum: expected a number in [0, 1), got 1.0"),
])
def test_jackpot_checks_every_option_before_training(option, value, message, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["jackpot", "--data", "synthetic", option, value, "--out", str(out)]) == 2
    assert message in error_line(capsys, "jackpot")
    assert not out.exists()


@pytest.mark.parametrize("command, option, value, message", [
    ("train", "--epochs", "0", "--epochs: expected a positive int, got 0"),
    ("train", "--optimizer", "rmsprop", "--optimizer: expected one of sgd, adam, got 'rmsprop'"),
    ("train", "--mode", "sparse", "--mode: expected one of auto, masked, compressed, got 'sparse'"),
    ("train", "--weight-decay", "-1", "--weight-decay: expected a number in [0, inf], got -1.0"),
    ("prune", "--epochs", "0", "--epochs: expected a positive int, got 0"),  # prune --train: the recipe's epochs
])
def test_a_recipe_refused_as_it_is_built_is_named_by_its_option_before_any_work(command, option, value, message,
                                                                                  tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    flags = ["--save", str(out)] if command == "train" else ["--train", "--method", "magnitude", "--out", str(out)]
    assert main([command, "--data", "synthetic", option, value, *flags]) == 2
    assert error_line(capsys, command).endswith(f"error: {message}")
    assert not out.exists()


@pytest.mark.parametrize("value", ["1", "-0.1"])
def test_train_refuses_a_momentum_outside_0_1_as_an_option(value, tmp_path, capsys):
    checkpoint = tmp_path / "run.pt"
    assert main(["train", "--data", "synthetic", "--momentum", value, "--checkpoint", str(checkpoint)]) == 2
    assert f"--momentum: expected a number in [0, 1), got {float(value)}" in error_line(capsys, "train")
    assert not checkpoint.exists()


def test_jackpot_refuses_epochs_and_steps_together_before_training(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["jackpot", "--data", "synthetic", "--epochs", "2", "--steps", "3", "--out", str(out)]) == 2
    message = "--steps: give the budget as epochs or as steps, not both (got epochs=2, steps=3)"
    assert message in error_line(capsys, "jackpot")
    assert not out.exists()


def test_demo_threads_0_fails_at_once_without_a_run_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--threads", "0", "--out", str(out)]) == 2
    assert "--threads: expected a thread count in [1, " in error_line(capsys, "demo")
    assert not out.exists()


def test_device_that_is_not_there(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--data", "synthetic", "--device", "cuda"]) == 2
    assert "--device: 'cuda' asked for, but this machine has no CUDA device(s)" in error_line(capsys, "train")
    assert main(["train", "--data", "synthetic", "--device", "tpu:7"]) == 2
    assert "--device: 'tpu:7' is not a device panning runs on (cpu, cuda, cuda:<i>, mps)" in error_line(capsys,
                                                                                                        "train")


def test_backend_that_cannot_run_here_is_one_line_without_traceback(tmp_path):
    """PANNING_BACKEND=triton as a user meets it: without a GPU Triton is unavailable (the test interpreter is off);
    with one, it does not run on the CPU the command was asked to use."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    env["PANNING_BACKEND"] = "triton"
    done = subprocess.run([sys.executable, "-m", "panning.cli", "prune", "--data", "synthetic", "--method",
                           "magnitude", "--device", "cpu", "--out", str(tmp_path / "m.safetensors")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    reason = "does not run on cpu (runs on cuda)" if torch.cuda.is_available() else "not available here: no CUDA GPU"
    assert done.stderr.startswith(f"panning prune: error: PANNING_BACKEND=triton: {reason}")
    assert not (tmp_path / "m.safetensors").exists()


def test_unknown_backend(monkeypatch, capsys):
    monkeypatch.setenv("PANNING_BACKEND", "fortran")
    assert main(["prune", "--data", "synthetic"]) == 2
    assert error_line(capsys, "prune").endswith("PANNING_BACKEND: unknown backend 'fortran'; choose one of reference, "
                                                "cpp, triton, cuda")


def test_prune_out_into_a_missing_folder(tmp_path, capsys):
    out = tmp_path / "missing" / "m.safetensors"
    assert main(["prune", "--data", "synthetic", "--method", "magnitude", "--out", str(out)]) == 2
    assert f"--out: cannot write '{out}': give a file name in an existing folder you can write to" in error_line(
        capsys, "prune")


def test_prune_out_pointing_at_a_folder_leaves_nothing_behind(tmp_path, capsys):
    folder = tmp_path / "masks"
    folder.mkdir()
    assert main(["prune", "--data", "synthetic", "--method", "magnitude", "--out", str(folder)]) == 2
    assert f"--out: cannot write '{folder}': give a file name" in error_line(capsys, "prune")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"] and not any(folder.iterdir())


def test_masks_save_onto_a_folder_fails_and_leaves_no_temporary_file(tmp_path):
    """The library path under the command: the atomic writer removes its temporary file on failure."""
    folder = tmp_path / "masks"
    folder.mkdir()
    with pytest.raises(OSError):
        Masks({"w": torch.ones(3, dtype=torch.bool)}).save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]


def test_train_masks_file_that_does_not_fit(tmp_path, capsys):
    bundle = data.load("synthetic")
    first = next(name for name, _ in models.build("mlp", bundle.input_shape, bundle.num_classes).named_parameters())
    path = tmp_path / "m.safetensors"
    Masks({first: torch.ones(2, 2, dtype=torch.bool)}).save(path)
    assert main(["train", "--data", "synthetic", "--model", "mlp", "--masks", str(path)]) == 2
    assert f"panning train: error: --masks: {first} has shape (2, 2), parameter has" in error_line(capsys, "train")
    assert main(["train", "--data", "synthetic", "--masks", str(tmp_path / "nope.safetensors")]) == 2
    assert f"--masks: no file at '{tmp_path / 'nope.safetensors'}'" in error_line(capsys, "train")


def test_method_options_are_checked_against_the_method(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["prune", "--data", "synthetic", "--method", "snip", "--iterations", "3", "--out", str(out)]) == 2
    assert error_line(capsys, "prune").endswith("--iterations: method 'snip' does not accept it (it takes "
                                                "per_class)")
    assert main(["prune", "--data", "synthetic", "--method", "magnitude", "--per-class", "3", "--out", str(out)]) == 2
    assert error_line(capsys, "prune").endswith("--per-class: method 'magnitude' does not accept it (it takes no "
                                                "options)")
    assert main(["prune", "--data", "synthetic", "--method", "magic", "--out", str(out)]) == 2
    assert error_line(capsys, "prune").endswith("--method: expected one of random, magnitude, snip, grasp, synflow, "
                                                "iterative_snip, force, panning, rl_panning, got 'magic'")
    assert main(["prune", "--data", "synthetic", "--method", "rl_panning", "--out", str(out)]) == 2
    assert "--agent: method 'rl_panning' needs a trained agent" in error_line(capsys, "prune")
    assert not out.exists()


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--data", "imagenet"])  # prune, train and jackpot also take a path: see below
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("panning evaluate: error: argument --data: invalid choice: 'imagenet'")
    assert main(["prune", "--data", "imagenet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("panning prune: error: --data: 'imagenet' is neither")


def test_evaluate_on_a_data_set_the_model_does_not_take(tmp_path, capsys):
    bundle = data.load("digits")
    path = tmp_path / "digits.safetensors"
    models.save(path, models.build("cnn2d", bundle.input_shape, bundle.num_classes), name="cnn2d",
                input_shape=bundle.input_shape, num_classes=bundle.num_classes, data="digits", seed=0)
    assert main(["evaluate", "--weights", str(path), "--data", "mnist1d"]) == 2
    assert error_line(capsys, "evaluate").endswith(
        "--data: mnist1d has inputs (1, 40) and 10 classes; the model takes (1, 8, 8) and 10 classes")


def test_prune_refuses_an_agent_of_another_network_naming_what_differs(tmp_path, capsys):
    from panning.pbt.rl.agent import AGENTS

    agent, out = AGENTS / "cnn1d-w4-mnist1d", tmp_path / "m.safetensors"
    assert main(["prune", "--method", "rl_panning", "--agent", str(agent), "--width", "1", "--out", str(out)]) == 2
    assert error_line(capsys, "prune").endswith(
        f"--agent: {str(agent)!r} was trained for another network: width 4.0 (here 1.0)")
    (tmp_path / "not-an-agent.json").write_text("{}")
    (tmp_path / "not-an-agent.safetensors").write_bytes(b"")
    assert main(["prune", "--method", "rl_panning", "--agent", str(tmp_path / "not-an-agent"), "--width", "4",
                 "--out", str(out)]) == 2
    assert "not-an-agent.json': not a saved panning agent" in error_line(capsys, "prune")
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "prune", "jackpot", "agent"])
def test_a_cifar_folder_that_is_not_one_is_named_as_data_dir(command, tmp_path, capsys):
    out = tmp_path / "out"
    flags = {"prune": ["--out", str(tmp_path / "m.safetensors")], "jackpot": ["--out", str(out)],
             "agent": ["--out", str(out / "agent")]}.get(command, [])
    assert main([command, "--data", "cifar10", "--data-dir", str(tmp_path), *flags]) == 2
    assert error_line(capsys, command).endswith(
        f"--data-dir: {str(tmp_path)!r} holds neither cifar-10-batches-py/test_batch nor test_batch")
    assert not out.exists() and not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("command", ["train", "prune", "jackpot", "agent"])
def test_a_model_that_does_not_take_the_data_sets_samples_is_named_as_model(command, tmp_path, capsys):
    out = tmp_path / "out"
    flags = {"prune": ["--out", str(tmp_path / "m.safetensors")], "jackpot": ["--out", str(out)],
             "agent": ["--out", str(out / "agent")]}.get(command, [])
    assert main([command, "--data", "mnist1d", "--model", "cnn2d", *flags]) == 2
    assert error_line(capsys, command).endswith(
        "--model: cnn2d with no keyword arguments gives no model that runs on mnist1d's samples of shape (1, 40) "
        "(ValueError: input_shape for 'cnn2d' must be (channels, height, width), got (1, 40))")
    assert not out.exists() and not (tmp_path / "m.safetensors").exists()


def test_train_refuses_the_checkpoint_of_another_run_as_checkpoint(tmp_path, capsys):
    checkpoint = tmp_path / "run.pt"
    command = ["train", "--data", "synthetic", "--epochs", "1", "--checkpoint", str(checkpoint), "--no-progress"]
    assert main(command) == 0
    written = checkpoint.read_bytes()
    capsys.readouterr()
    assert main([*command, "--lr", "0.5"]) == 2
    assert error_line(capsys, "train").endswith(
        f"--checkpoint: {str(checkpoint)!r} belongs to another run (lr 0.01 there, 0.5 here); continue with its "
        "settings, or start afresh with another checkpoint (or delete this one)")
    assert checkpoint.read_bytes() == written


@pytest.mark.parametrize("command, flag, message", [
    (["train", "--data", "synthetic"], "--masks", "--masks: no file at {path!r}"),
    (["jackpot", "--data", "synthetic", "--model", "cnn1d"], "--weights", "--weights: no file at {path!r}"),
    (["evaluate"], "--weights", "--weights: {path!r} is not a model saved by panning.models.save"),
    (["train", "--data", "cifar10"], "--data-dir", "--data-dir: {path!r} holds neither"),
    (["prune", "--data", "synthetic"], "--config", "--config: {path!r}: [Errno 2] No such file or directory"),
])
def test_a_missing_input_is_named_by_its_reader_before_any_work(command, flag, message, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "missing")
    assert main([*command, flag, path]) == 2
    assert message.format(path=path) in error_line(capsys, command[0])
    assert list(tmp_path.iterdir()) == []
