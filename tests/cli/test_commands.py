"""What a user does right after a first run: the data set's default model, training under a fixed mask,
evaluating a saved model, stopping a run, asking for help."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from panning import catalog, data, models
from panning.cli import main
from panning.masks import Masks

ROOT = Path(__file__).resolve().parents[2]


def table_row(out: str, first_cell: str) -> dict[str, str]:
    """The cells of a printed one-row table, by column name."""
    lines = [line for line in out.splitlines() if "│" in line or "┃" in line]
    header = next(line for line in lines if "┃" in line)
    row = next(line for line in lines if line.strip("│ ").startswith(first_cell))
    names = [cell.strip() for cell in header.strip("┃ ").split("┃")]
    return dict(zip(names, [cell.strip() for cell in row.strip("│ ").split("│")]))


def accuracy_by_hand(model: torch.nn.Module, dataset) -> float:
    x, y = dataset.tensors
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def test_catalog_names_what_the_registries_build():
    assert catalog.DATASETS == data.available() and catalog.MODELS == models.available()
    assert set(catalog.DEFAULT_MODEL) == set(catalog.DATASETS) and set(catalog.DEFAULT_MODEL.values()) <= set(
        catalog.MODELS)


def test_train_on_digits_picks_the_data_sets_model(capsys):
    assert main(["train", "--data", "digits", "--epochs", "1", "--no-progress", "--threads", "1"]) == 0
    row = table_row(capsys.readouterr().out, "digits")
    assert row["model"] == "cnn2d" == catalog.DEFAULT_MODEL["digits"] and row["epochs"] == "1"


def test_train_under_a_fixed_mask_then_evaluate_the_saved_model(tmp_path, capsys):
    masks_path, model_path = tmp_path / "m.safetensors", tmp_path / "model.safetensors"
    assert main(["prune", "--data", "synthetic", "--method", "magnitude", "--sparsity", "0.75",
                 "--out", str(masks_path)]) == 0
    masks = Masks.load(masks_path)
    assert main(["train", "--data", "synthetic", "--masks", str(masks_path), "--epochs", "2", "--seed", "3",
                 "--mode", "compressed", "--save", str(model_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    trained = table_row(printed, "synthetic")
    layers = ", ".join(f"{name.removesuffix('.weight')} compressed" for name in masks)
    assert f"layer paths: {layers}\n" in printed
    assert printed.rstrip().endswith(f"model saved to {model_path} (panning evaluate --weights {model_path})")
    assert trained["model"] == "mlp" and trained["sparsity"] == f"{masks.sparsity:.2%}" == "75.00%"
    model, spec = models.load(model_path)
    weights = dict(model.named_parameters())
    for name, mask in masks.items():  # the pruned weights stayed exactly zero through training
        assert not weights[name][~mask].any() and weights[name][mask].ne(0).all()
    assert spec["data"] == "synthetic" and spec["seed"] == 3

    # evaluate: data set and split seed come from the file; the accuracy is the model's, computed by hand
    test = data.load("synthetic", seed=3).test
    assert main(["evaluate", "--weights", str(model_path)]) == 0
    row = table_row(capsys.readouterr().out, "mlp")
    assert row["data"] == "synthetic (seed 3)" and row["masks"] == "none"
    assert row["test acc"] == f"{100 * accuracy_by_hand(model, test):.2f}%"
    assert row["test samples"] == str(len(test))

    # with a masks file that prunes more, the table reports the masked network
    harsher = Masks({name: mask & (torch.rand(mask.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
                     for name, mask in masks.items()})
    harsher.save(tmp_path / "harsher.safetensors")
    assert main(["evaluate", "--weights", str(model_path), "--masks", str(tmp_path / "harsher.safetensors")]) == 0
    row = table_row(capsys.readouterr().out, "mlp")
    assert row["sparsity"] == f"{harsher.sparsity:.2%}"
    assert row["test acc"] == f"{100 * accuracy_by_hand(harsher.apply(model), test):.2f}%"

    # the batch size and the seed are checked by the library (train.evaluate, data.load), named by their flags
    for flags, message in ((["--batch-size", "0"], "--batch-size: expected a positive int, got 0"),
                           (["--seed", "-1"], "--seed: expected an int in [0, 2**32), got -1")):
        assert main(["evaluate", "--weights", str(model_path), *flags]) == 2
        assert capsys.readouterr().err.strip().endswith(f"error: {message}")


def test_evaluate_refuses_what_it_cannot_read(tmp_path, capsys):
    assert main(["evaluate"]) == 2
    assert "--weights: required" in capsys.readouterr().err
    not_a_model = tmp_path / "m.safetensors"
    Masks({"w": torch.ones(2, dtype=torch.bool)}).save(not_a_model)
    assert main(["evaluate", "--weights", str(not_a_model)]) == 2
    assert "--weights: " in (err := capsys.readouterr().err) and "is not a model saved by panning.models.save" in err


def run_until_checkpoint(command: list[str], checkpoints: Path, pattern: str,
                         stop: signal.Signals) -> subprocess.CompletedProcess:
    """Start `panning <command>`, wait for its first checkpoint (a file matching `pattern` under `checkpoints`),
    send `stop`, and collect what it printed."""
    process = subprocess.Popen([sys.executable, "-m", "panning.cli", *command], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ,
                                                                                     "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not any(checkpoints.glob(pattern)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_training_says_how_to_resume(stop, tmp_path):
    checkpoint = tmp_path / "run.pt"
    command = ["train", "--data", "synthetic", "--epochs", "100000", "--checkpoint", str(checkpoint),
               "--no-progress", "--threads", "1"]
    done = run_until_checkpoint(command, tmp_path, "run.pt", stop)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == f"panning train: interrupted; run the same command again to resume from {checkpoint}"
    assert torch.load(checkpoint, weights_only=True)["history"]  # a whole checkpoint was left, nothing torn
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


@pytest.mark.slow
def test_a_stopped_jackpot_search_says_how_to_resume(tmp_path):
    bundle = data.load("synthetic")
    dense = tmp_path / "dense.pt"
    torch.save(models.build("cnn1d", bundle.input_shape, bundle.num_classes).state_dict(), dense)
    out = tmp_path / "runs"
    command = ["jackpot", "--data", "synthetic", "--model", "cnn1d", "--weights", str(dense), "--epochs", "100000",
               "--batch-size", "16", "--out", str(out), "--no-progress", "--threads", "1"]
    done = run_until_checkpoint(command, out, "*/search.pt", signal.SIGTERM)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == (f"panning jackpot: interrupted; run the same command again to resume the search "
                                   f"from its checkpoint under {out}")


def test_help_builds_without_importing_torch():
    code = "import sys, panning.cli as cli; cli.parser().format_help(); sys.exit(2 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = subprocess.run([sys.executable, "-m", "panning.cli", "jackpot", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "--sparsity" in shown.stdout and "(default: 0.9)" in shown.stdout


def test_docs_list_every_option_of_every_command_as_the_tables_define_it():
    """docs/cli.md's option tables are generated from the option tables (scripts/cli_docs.py); regenerate them when
    an option changes. Every option of every command has its row, with its help and default."""
    import importlib.util

    from panning.cli import COMMANDS

    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert doc.endswith(generator.option_tables()), "docs/cli.md is stale: run python scripts/cli_docs.py"
    for name, command in COMMANDS.items():
        section = doc.split(f"### `panning {name}`")[1].split("### ")[0]
        for option in command.OPTIONS:
            assert f"| `--{option.flag}` | {option.help_text()}" in section, (name, option.flag)


@pytest.mark.parametrize("argv", [["demo", "--threads", "0"], ["jackpot", "--finetune-epochs", "-1"],
                                  ["prune", "--method", "snip", "--out", "/nonexistent/m.safetensors"]])
def test_a_plain_typo_is_reported_before_torch_is_even_imported(argv):
    """Cheap checks run before the ones that import torch or an algorithm (device, method names)."""
    code = (f"import sys; from panning.cli import main; status = main({argv!r}); "
            "sys.exit(10 if 'torch' in sys.modules else status)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"panning {argv[0]}: error: --")


@pytest.mark.parametrize("flag, shown", [("--progress", True), ("--no-progress", False)])
def test_prune_draws_its_progress_bar_on_a_terminal_unless_told_not_to(flag, shown, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as if run in a terminal
    assert main(["prune", "--data", "synthetic", "--method", "synflow", "--iterations", "3", flag,
                 "--out", str(tmp_path / "m.safetensors")]) == 0
    assert ("synflow: " in capsys.readouterr().err) == shown
