"""The CIFAR recipes in configs/ run end to end, for a few steps, on tiny folders in the real pickle format.

Each recipe is run as a user would (`panning <command> --config <recipe> --data-dir <folder>`), with flags that
shrink it to seconds on a CPU (one epoch, a narrow network, a few pruning or search steps): what is checked is
that every key of the recipe is accepted and the whole pipeline (dense training -> saved model -> Panning ->
training under the mask; saved model -> jackpot search) produces its files.
"""
from pathlib import Path

import pytest

from panning.cli import main
from panning.masks import Masks

from ..cifar_folder import LAYOUTS, write_cifar

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = {"cifar10": "vgg19_bn", "cifar100": "resnet32"}
SMALL = ["--width", "0.0625", "--device", "cpu", "--threads", "1"]


@pytest.mark.parametrize("data", sorted(RECIPES))
def test_recipe_trains_prunes_and_searches(tmp_path, data):
    folder, files, label_key, num_classes = LAYOUTS[data]
    write_cifar(tmp_path / folder, files, label_key, num_classes, n=8)
    model = RECIPES[data]
    common = ["--data-dir", str(tmp_path)] + SMALL

    dense = tmp_path / "dense.safetensors"
    assert main(["train", "--config", str(CONFIGS / f"train_{data}_{model}.yaml"), "--epochs", "1",
                 "--batch-size", "8", "--checkpoint", str(tmp_path / "dense.pt"), "--save", str(dense),
                 "--no-progress"] + common) == 0
    assert dense.is_file()

    masks_path = tmp_path / "panning.safetensors"
    assert main(["prune", "--config", str(CONFIGS / f"prune_{data}_{model}_panning.yaml"), "--iterations", "2",
                 "--per-class", "1", "--epochs", "1", "--out", str(masks_path)] + common) == 0
    masks = Masks.load(masks_path)
    assert masks.sparsity == pytest.approx(0.98, abs=1 / masks.numel)

    runs = tmp_path / "jackpot"
    assert main(["jackpot", "--config", str(CONFIGS / f"jackpot_{data}_{model}.yaml"), "--weights", str(dense),
                 "--epochs", "1", "--batch-size", "8", "--out", str(runs), "--no-progress"] + common) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    found = Masks.load(run / "masks.safetensors")
    assert found.sparsity == pytest.approx(0.9, abs=0.01)
    assert "-authors-" in run.name  # the recipe's preset reached the search
