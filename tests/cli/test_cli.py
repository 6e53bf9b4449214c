"""panning.cli: train end to end on tiny runs, YAML config precedence, errors, every command registered."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from panning import cli, models
from panning.cli.options import read_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train", "--data", "synthetic", "--model", "mlp", "--epochs", "1", "--no-progress"]


def _row(out: str) -> list[str]:
    """The cells of the table's single data row."""
    line = next(line for line in out.splitlines() if "synthetic" in line or "digits" in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_train_prints_results_table(capsys):
    assert cli.main(TINY) == 0
    out = capsys.readouterr().out
    for column in ("data", "model", "params", "epochs", "test loss", "test acc", "time"):
        assert column in out
    data, model, params, sparsity, epochs, loss, acc, wall = _row(out)
    assert (data, model, sparsity, epochs) == ("synthetic", "mlp", "dense", "1")
    assert int(params.replace(",", "")) > 0 and float(loss) > 0 and acc.endswith("%") and wall.endswith("s")


def test_config_supplies_options_and_flags_override(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: synthetic\nmodel: cnn1d\nepochs: 3\nbatch-size: 32\nlr: 1e-3\nwidth: 0.5\nprogress: false\n"
    )
    assert cli.main(["train", "--config", str(config), "--epochs", "1"]) == 0
    data, model, _, _, epochs, *_ = _row(capsys.readouterr().out)
    assert (data, model, epochs) == ("synthetic", "cnn1d x0.5", "1")


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochz: 3\n", "unknown option 'epochz'"),
        ("optimizer: rmsprop\n", "--optimizer: expected one of sgd, adam, got 'rmsprop'"),
        ("epochs: many\n", "option 'epochs': expected an integer"),
        ("epochs: 2.5\n", "option 'epochs': expected an integer"),
        ("lr: true\n", "option 'lr': expected a number"),
        ("- 1\n", "bad.yaml': expected a YAML mapping of name: value, got [1]"),
        ("lr: [1\n", "bad.yaml': while parsing a flow sequence"),
        ("save: {a: 1}\n", "option 'save': expected str, bytes or os.PathLike object, not dict"),
    ],
)
def test_bad_config_exits_2_naming_it(tmp_path, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert cli.main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("panning train: error: ")


def test_library_errors_exit_2(capsys):
    assert cli.main(["train", "--data", "cifar10", "--model", "resnet32", "--no-progress"]) == 2
    assert "panning train: error: --data-dir: required for 'cifar10'" in capsys.readouterr().err


def test_a_refused_value_is_named_as_a_flag_only_where_the_command_has_that_option():
    from panning.checks import ConfigError, positive_int

    with pytest.raises(ConfigError) as refused:
        positive_int("lanes", 0)  # as the RL environment refuses its lanes
    assert str(cli._flagged(refused.value, cli.agent.OPTIONS)) == "--lanes: expected a positive int, got 0"
    assert cli._flagged(refused.value, cli.prune.OPTIONS) is refused.value  # prune has no --lanes


def test_threads(capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert cli.main(TINY + ["--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert cli.main(TINY + ["--threads", "0"]) == 2
    assert "--threads: expected a thread count in [1, " in capsys.readouterr().err


def test_unknown_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--bogus"])
    assert exc.value.code == 2 and "--bogus" in capsys.readouterr().err


def test_checkpoint_and_save(tmp_path, capsys):
    ckpt, saved = tmp_path / "ckpt.pt", tmp_path / "model.safetensors"
    assert cli.main(TINY + ["--checkpoint", str(ckpt), "--save", str(saved)]) == 0
    assert ckpt.is_file()
    model, spec = models.load(saved)
    assert spec["name"] == "mlp" and spec["data"] == "synthetic" and 0 <= spec["test_acc"] <= 1
    assert cli.main(TINY + ["--checkpoint", str(ckpt)]) == 0  # resumes a finished run: nothing left to do
    assert _row(capsys.readouterr().out)[4] == "1"


@pytest.mark.slow
def test_runs_as_a_module():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "panning.cli", *TINY], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "test acc" in done.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    """configs/<command>_<what>.yaml must only set options that <command> knows."""
    command = cli.COMMANDS[path.stem.split("_")[0]]
    assert read_config(path, command.OPTIONS)


def test_every_command_is_implemented():
    assert set(cli.COMMANDS) == {"train", "prune", "jackpot", "evaluate", "agent", "bench", "demo"}
    for name, command in cli.COMMANDS.items():
        assert command.OPTIONS and command.HELP and callable(command.run), name


def test_progress_bars_only_on_a_terminal(monkeypatch):
    """--progress (the default) draws bars only where stderr is a terminal; --no-progress never does."""
    import argparse
    import io as _io

    from panning.cli import options

    def resolved(flag, tty):
        stream = _io.StringIO()
        stream.isatty = lambda: tty
        monkeypatch.setattr(sys, "stderr", stream)
        return options.resolve([options.PROGRESS], argparse.Namespace(progress=flag, config=None))["progress"]

    assert resolved(None, True) is True and resolved(None, False) is False
    assert resolved(False, True) is False and resolved(True, False) is False
