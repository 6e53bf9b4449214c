"""The command line on a user's own model (package.module:function, torchvision:NAME, timm:NAME) and data (a
package.module:function, a tensor file, an image folder); every bad one is one line naming its flag."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import save_file

from panning.cli import main
from panning.masks import Masks

from .own_factories import blobs
from .test_commands import table_row

OWN = "tests.cli.own_factories"
QUIET = ["--no-progress", "--threads", "1"]


def write_config(path, **values):
    path.write_text(json.dumps(values))  # JSON is YAML
    return str(path)


def test_train_a_function_model_on_function_data_with_their_kwargs(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", model=f"{OWN}:tiny_net", model_kwargs={"classes": 3, "width": 4},
                          data=f"{OWN}:blobs", data_kwargs={"n": 45})
    assert main(["train", "--config", config, "--epochs", "2", "--lr", "0.05", *QUIET]) == 0
    row = table_row(capsys.readouterr().out, "blobs")
    width = 4
    assert row["model"] == f"{OWN}:tiny_net" and row["params"] == f"{3 * width * 9 + width + width * 64 * 3 + 3:,}"
    assert row["epochs"] == "2" and row["test acc"].endswith("%")


def test_prune_a_torchvision_model_on_a_tensor_file(tmp_path, capsys):
    x, y = blobs(40).tensors
    save_file({"x": x, "y": y}, tmp_path / "mine.safetensors")
    out = tmp_path / "masks.safetensors"
    assert main(["prune", "--data", str(tmp_path / "mine.safetensors"), "--model", "torchvision:mobilenet_v3_small",
                 "--model-kwargs", "{width_mult: 0.25}", "--method", "snip", "--per-class", "2",
                 "--sparsity", "0.8", "--out", str(out), *QUIET]) == 0
    masks = Masks.load(out)
    assert abs(masks.sparsity - 0.8) < 1e-4 and "classifier.3.weight" in masks


def test_prune_a_timm_model_on_an_image_folder_then_search_a_trained_one(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / "imgs" / split / c / f"{i}.png")
    model = ["--data", str(tmp_path / "imgs"), "--model", "timm:resnet18", "--model-kwargs",
             "{channels: [4, 8, 8, 8], stem_width: 4}"]
    masks = tmp_path / "m.safetensors"
    assert main(["prune", *model, "--method", "magnitude", "--out", str(masks), *QUIET]) == 0
    assert main(["train", *model, "--epochs", "1", "--save", str(tmp_path / "dense.safetensors"), *QUIET]) == 0
    assert "(panning jackpot --model timm:resnet18 --weights" in capsys.readouterr().out
    assert main(["jackpot", *model, "--weights", str(tmp_path / "dense.safetensors"), "--steps", "2",
                 "--batch-size", "4", "--out", str(tmp_path / "runs"), *QUIET]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("imgs-timm-resnet18-") and "-kw" in run.name  # the kwargs tell runs apart
    assert abs(Masks.load(run / "masks.safetensors").sparsity - 0.9) < 1e-3


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet99"], "--model: expected one of mlp, .* package.module:function, got 'resnet99'"),
    (["--model", f"{OWN}:nothere"], f"--model: {OWN}:nothere with no keyword arguments gives no model that runs "
     "on digits's samples of shape \\(1, 8, 8\\) \\(AttributeError: .*has no attribute 'nothere'\\)"),
    (["--model", "no_such_package.models:net"], "--model: No module named 'no_such_package'"),
    (["--model", f"{OWN}:not_a_model"], f"--model: {OWN}:not_a_model with no keyword arguments gives no model "
     "that runs on digits's samples .*\\(AttributeError: 'str' object has no attribute"),
    (["--model", f"{OWN}:tiny_net", "--model-kwargs", "{depth: 3}"], "--model: .* with {'depth': 3} gives no "
     "model .*\\(TypeError"),
    (["--model", f"{OWN}:tiny_net", "--model-kwargs", "[1, 2]"], "argument --model-kwargs: invalid mapping value"),
    (["--model", "torchvision:resnet18", "--width", "2"], "--width: scales panning's own models only"),
    (["--model", "torchvision:no_such_net"], "--model: torchvision:no_such_net with no keyword arguments gives no "
     "model"),
    (["--model", "mlp", "--model-kwargs", "{a: 1}"], "--model-kwargs: panning's own models take none"),
    (["--model", "cnn1d", "--data", f"{OWN}:blobs"], "--model: cnn1d with no keyword arguments gives no model that "
     "runs on blobs's samples"),
    (["--model", f"{OWN}:tiny_net", "--data", "digits"], "--model: .* gives no model that runs on digits's samples"),
    (["--data", f"{OWN}:blobs"], "--model: required with --data"),
    (["--data", "missing.pt"], "--data: 'missing.pt' is neither a data set"),
    (["--data", f"{OWN}:blobs", "--data-kwargs", "{colour: red}", "--model", "mlp"],
     f"--data: {OWN}:blobs with {{'colour': 'red'}} gives no data panning can use \\(TypeError: .*unexpected "
     "keyword"),
])
def test_a_bad_model_or_data_is_one_line_naming_its_flag(args, message, capsys):
    data = [] if "--data" in args else ["--data", "digits"]
    try:
        status = main(["train", *data, *args, "--epochs", "1", *QUIET])
    except SystemExit as exit:  # argparse's own errors (a flag's type)
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("panning train: error: ")
    assert __import__("re").search(message, err), err


def test_a_model_of_another_library_needs_epochs_and_weights_to_search(tmp_path, capsys):
    assert main(["train", "--data", f"{OWN}:blobs", "--model", f"{OWN}:tiny_net", *QUIET]) == 2
    assert f"--epochs: required for --model {OWN}:tiny_net" in capsys.readouterr().err
    assert main(["jackpot", "--data", f"{OWN}:blobs", "--model", f"{OWN}:tiny_net", "--out", str(tmp_path),
                 *QUIET]) == 2
    assert "--weights: required for --model" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_evaluate_refuses_a_saved_model_of_another_library(tmp_path, capsys):
    saved = tmp_path / "own.safetensors"
    assert main(["train", "--data", f"{OWN}:split_blobs", "--model", f"{OWN}:tiny_net", "--epochs", "1",
                 "--save", str(saved), *QUIET]) == 0
    assert main(["evaluate", "--weights", str(saved)]) == 2
    assert f"--weights: holds a {OWN}:tiny_net model" in capsys.readouterr().err


def test_a_data_function_may_return_a_pair_and_must_return_data(capsys):
    assert main(["train", "--data", f"{OWN}:split_blobs", "--model", "mlp", "--epochs", "1", *QUIET]) == 0
    assert table_row(capsys.readouterr().out, "split_blobs")["epochs"] == "1"
    assert main(["train", "--data", f"{OWN}:tiny_net", "--model", "mlp", "--epochs", "1", *QUIET]) == 2
    assert ("--data: tests.cli.own_factories:tiny_net with no keyword arguments gives no data panning can use "
            "(TypeError: train: expected a torch Dataset of (input, label) items or a DataLoader of (inputs, labels) "
            "batches, got Sequential)") in capsys.readouterr().err


def test_the_documented_config_reads_as_the_options_it_shows(tmp_path):
    import re
    from pathlib import Path

    from panning.cli import train
    from panning.cli.options import read_config

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    (tmp_path / "own.yaml").write_text(re.search(r"```yaml\n(.*?)```", text, flags=re.S).group(1))
    assert read_config(tmp_path / "own.yaml", train.OPTIONS) == {
        "model": "torchvision:mobilenet_v3_small", "model_kwargs": {"width_mult": 0.5},
        "data": "my_project.data:load_scans", "data_kwargs": {"root": "/data/scans"}}


def test_a_library_that_is_not_installed_is_named_with_what_to_install(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # its import fails as if it were not installed
    assert main(["train", "--data", f"{OWN}:blobs", "--model", "timm:resnet18", "--epochs", "1", *QUIET]) == 2
    assert capsys.readouterr().err == ("panning train: error: --model: timm:resnet18 needs timm, which is not "
                                       "installed: pip install timm (after torchvision)\n")
