"""panning.prune and `panning prune`: exact sparsity and determinism for every method, argument errors, CLI."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from panning import data, models, prune
from panning.arena import except_last
from panning.cli import main
from panning.masks import Masks
from panning.pbt import METHODS
from panning.sparsity import keep_count
from panning.train import RECIPES, train

FAST = {"iterations": 4, "per_class": 3}


@pytest.fixture(scope="module")
def bundle():
    return data.load("synthetic", num_classes=3, input_shape=(1, 6, 6), n_train=45, n_test=15)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("cnn2d", (1, 6, 6), 3, width=0.125)  # conv+BN+maxpool: 4 convs of 4/8 channels, linear


def fast_options(method: str) -> dict:
    return {key: value for key, value in FAST.items() if key in METHODS[method].defaults}


@pytest.mark.parametrize("method", [m for m in METHODS if m != "rl_panning"])  # RL: tests/pbt/test_pbt_rl.py
def test_every_method_is_exact_deterministic_and_leaves_the_model_alone(method, bundle):
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prune(model, method, 0.9, bundle, seed=1, **fast_options(method))
    assert isinstance(masks, Masks)
    assert list(masks) == [n for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    assert masks.kept == keep_count(masks.numel, 0.9)
    again = prune(model, method, 0.9, bundle, seed=1, **fast_options(method))
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    if method not in ("magnitude", "synflow"):  # the methods that draw nothing
        other = prune(model, method, 0.9, bundle, seed=2, **fast_options(method))
        assert any(not torch.equal(masks[n], other[n]) for n in masks)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.99, 0.999])
def test_exact_sparsity_at_the_extremes(sparsity, bundle):
    masks = prune(net(), "snip", sparsity, bundle, per_class=3)
    assert masks.kept == keep_count(masks.numel, sparsity)


def test_prune_accepts_a_dataset_and_synflow_needs_no_data(bundle):
    model = net()
    from_bundle = prune(model, "snip", 0.8, bundle, per_class=3, seed=3)
    from_dataset = prune(model, "snip", 0.8, bundle.train, per_class=3, seed=3)
    assert all(torch.equal(from_bundle[n], from_dataset[n]) for n in from_bundle)
    free = prune(model, "synflow", 0.8, input_shape=(1, 6, 6), iterations=3)
    assert free.kept == keep_count(free.numel, 0.8)


def test_prune_keeps_the_classifier_dense_on_request(bundle):
    model = net()
    masks = prune(model, "magnitude", 0.9, include=except_last(model))
    assert "15.weight" not in masks and len(masks) == 4


@pytest.mark.parametrize("call, error, match", [
    (lambda b: prune(net(), "nope", 0.5, b), ValueError, "method"),
    (lambda b: prune(net(), "snip", 1.5, b), ValueError, "sparsity"),
    (lambda b: prune(net(), "snip", 1.0, b), ValueError, r"sparsity: expected a number in \[0, 1\), got 1.0"),
    (lambda b: prune(net(), "panning", 0.5, b, indices="abs"), ValueError, "indices"),
    (lambda b: prune(net(), "panning", 0.5, b, rounding="ceil"), ValueError, "rounding"),
    (lambda b: prune(net(), "grasp", 0.5, b, temperature=0), ValueError, "temperature"),
    (lambda b: prune(net(), "snip", 0.5), ValueError, "data"),
    (lambda b: prune(net(), "snip", 0.5, b, iterations=3), ValueError,
     r"^iterations: method 'snip' does not accept it \(it takes per_class\)"),
    (lambda b: prune(net(), "snip", 0.5, b, iterations_=3), TypeError, "iterations_"),
    (lambda b: prune(net(), "rl_panning", 0.5, b), ValueError, "^agent: method 'rl_panning' needs a trained agent"),
    (lambda b: prune(net(), "snip", 0.5, b, per_class=1000), ValueError, "per_class"),
    (lambda b: prune(net(), "synflow", 0.5), ValueError, "input_shape"),
    (lambda b: prune(net(), "force", 0.5, b, iterations=0), ValueError, "iterations"),
    (lambda b: prune(net(), "random", 0.5, seed="1"), ValueError, "^seed: expected an int, got '1'"),
    (lambda b: prune(net(), "random", 0.5, seed=-1), ValueError, r"seed: expected an int in \[0, 2\*\*32\)"),
    (lambda b: prune(net(), "snip", 0.5, [1, 2]), TypeError, "data"),
])
def test_prune_rejects_bad_arguments(call, error, match, bundle):
    with pytest.raises(error, match=match):
        call(bundle)


# -- CLI ----------------------------------------------------------------------------------------------

def test_cli_prunes_reports_and_saves(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code = main(["prune", "--data", "synthetic", "--method", "panning", "--sparsity", "0.95", "--iterations", "3",
                          "--per-class", "3", "--width", "0.2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "effective sparsity" in text and "collapsed layers" in text and "1.weight" in text
    masks = Masks.load(out)
    assert masks.kept == keep_count(masks.numel, 0.95)


def test_cli_trains_the_pruned_network_on_request(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["prune", "--data", "synthetic", "--method", "snip", "--sparsity", "0.8", "--per-class", "3",
                          "--width", "0.2", "--train", "--epochs", "1", "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test accuracy after 1 epoch:" in text
    accuracy = float(text.split("test accuracy after 1 epoch:")[1].split("%")[0])
    # the same pipeline through the library: same masks, and the accuracy the command printed
    synthetic = data.load("synthetic")
    torch.manual_seed(0)
    model = models.build("mlp", synthetic.input_shape, synthetic.num_classes, width=0.2)
    masks = prune(model, "snip", 0.8, synthetic, per_class=3)
    assert masks == Masks.load(out)
    trained = train(model, synthetic, masks=masks, progress=False, **{**RECIPES["mlp"], "epochs": 1})
    assert accuracy == pytest.approx(100 * trained.test_acc, abs=0.006)


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("sparsty: 0.5\n")
    assert main(["prune", "--config", str(config)]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert main(["prune", "--data", "synthetic", "--method", "snip", "--iterations", "3"]) == 2
    assert "does not accept" in capsys.readouterr().err


def test_panning_prune_is_the_entry_point_function_and_no_module_shadows_it():
    import importlib.util

    import panning
    import panning.pbt.entry

    assert importlib.util.find_spec("panning.prune") is None
    assert panning.prune is panning.pbt.entry.prune and callable(panning.prune)
