"""Bad input at the Python API, round 2: a model without values (meta device), data of another sample shape than
the model takes, a seed out of range, a sparsity that keeps no weight, a float mask that is neither 0 nor 1: each
one ValueError naming the argument, before any work (train's meta model: torch's own error where it is moved);
tied weights, once refused, are pruned once under one mask at the same entry points; and library progress bars
draw only on a terminal, as the command line's do."""
from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn

from panning import data, models, ops, prune
from panning.jackpot import magnitude_masks, search
from panning.nn import densify
from panning.train import train


@pytest.fixture(scope="module")
def bundle():
    return data.load("synthetic", num_classes=3, input_shape=(8,), n_train=60, n_test=30)


def mlp():
    torch.manual_seed(0)
    return models.build("mlp", (8,), 3, width=0.1)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.c(self.b(torch.relu(self.a(x))))


ENTRY_POINTS = {
    "prune magnitude": lambda model, data: prune(model, "magnitude", 0.5, data),
    "prune snip": lambda model, data: prune(model, "snip", 0.5, data),
    "search": lambda model, data: search(model, data, sparsity=0.5, epochs=1, progress=False),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_a_model_on_the_meta_device_is_refused(entry, bundle):
    with torch.device("meta"):
        model = models.build("mlp", (8,), 3, width=0.1)
    with pytest.raises(ValueError, match=r"^model: its parameters are on the meta device \(shapes without values\)"):
        ENTRY_POINTS[entry](model, bundle)
    with pytest.raises(NotImplementedError, match=r"^Cannot copy out of meta tensor; no data!"):  # torch's own
        train(model, bundle, epochs=1, progress=False)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_tied_weights_are_pruned_once_under_one_mask(entry, bundle):
    torch.manual_seed(0)
    model = Tied()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, c = model.a.weight.detach().clone(), model.c.weight.detach().clone()
    outcome = ENTRY_POINTS[entry](model, bundle)
    if entry == "search":  # the classifier stays dense: a.weight (64 weights, b.weight too) is searched alone
        masks = outcome.masks
        assert list(masks) == ["a.weight"] and outcome.budgets == {"a.weight": 32} and masks.kept == 32
        plain = densify(outcome.model)
        assert plain.b.weight is plain.a.weight and torch.equal(plain.a.weight, a * masks["a.weight"])
        return
    masks = outcome
    assert list(masks) == ["a.weight", "c.weight"]  # 64 + 24 weights: the tied one counted once
    assert masks.numel == 88 and masks.kept == 44
    if entry == "prune magnitude":  # one global threshold over both
        scores = torch.cat([a.abs().flatten(), c.abs().flatten()])
        top = torch.zeros(88, dtype=torch.bool)
        top[scores.topk(44).indices] = True
        assert torch.equal(torch.cat([masks["a.weight"].flatten(), masks["c.weight"].flatten()]), top)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # prune leaves the model alone
    assert model.b.weight is model.a.weight
    masks.apply(model)
    assert torch.equal(model.b.weight, a * masks["a.weight"])  # the mask holds in both places


def test_data_of_another_sample_shape_is_named_before_work(bundle):
    other = data.load("synthetic", num_classes=3, input_shape=(5,), n_train=60, n_test=30)
    message = r"^data: samples of shape \(5,\) do not fit the model, whose first layer \(Linear\) takes 8 features$"
    for entry in ENTRY_POINTS.values():
        with pytest.raises(ValueError, match=message):
            entry(mlp(), other)
    with pytest.raises(ValueError, match=message):
        train(mlp(), other, epochs=1, progress=False)
    images = data.load("synthetic", num_classes=3, input_shape=(1, 8, 8), n_train=30, n_test=30)
    cnn = models.build("cnn1d", (1, 40), 3)
    with pytest.raises(ValueError, match=r"^data: samples of shape \(1, 8, 8\) do not fit the model, whose first "
                                         r"layer \(Conv1d\) takes 1 channel\(s\) of 1-D samples$"):
        prune(cnn, "magnitude", 0.5, images)
    with pytest.raises(ValueError, match=r"^input_shape: samples of shape \(3, 40\)"):
        prune(cnn, "synflow", 0.5, input_shape=(3, 40))


@pytest.mark.parametrize("seed", [-1, 2**32, 10**23])
def test_a_seed_out_of_range_is_named(seed):
    with pytest.raises(ValueError, match=re.escape(f"seed: expected an int in [0, 2**32), got {seed}")):
        data.load("digits", seed=seed)


def test_a_sparsity_below_1_that_keeps_no_weight_is_refused_as_1_is(bundle):
    model = mlp()
    numel = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    largest = 1 - 0.5 / numel  # round(numel * (1 - s)) is 1 up to here, 0 above
    assert prune(model, "magnitude", largest - 1e-9, bundle).kept == 1
    with pytest.raises(ValueError, match=rf"^sparsity: 0.9999 keeps none of the {numel} weights \(sparsity 1 removes "
                                         rf"every weight\); at most {largest:.6g} keeps one$"):
        prune(model, "magnitude", 0.9999, bundle)
    for call in (lambda: search(model, bundle, sparsity=0.9999, epochs=1, progress=False),
                 lambda: magnitude_masks(model, 0.9999)):
        with pytest.raises(ValueError, match=r"^sparsity: 0.9999 keeps none of the \d+ weights"):
            call()
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())  # a refused search leaves the model as given


def test_a_float_mask_of_0_5_is_refused_by_masked_linear_as_to_sparse_refuses_it():
    x, weight = torch.randn(2, 6), torch.randn(4, 6)
    half = torch.full((4, 6), 0.5)
    with pytest.raises(ValueError, match=r"^mask: a floating mask must hold only 0 and 1 \(or be bool\), got 0.5$"):
        ops.masked_linear(x, weight, half)
    with pytest.raises(TypeError, match="^mask: expected a bool tensor"):
        ops.to_sparse(weight, half)
    ones = torch.ones(4, 6)
    ones[0, 0] = 0
    expected = x @ (weight * ones).T  # a 0/1 float mask is still the documented straight-through form
    torch.testing.assert_close(ops.masked_linear(x, weight, ones), expected)


def test_library_progress_bars_draw_only_on_a_terminal(bundle, monkeypatch):
    """progress=True is a request, as on the command line: into a log (not a terminal) nothing is drawn."""
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    train(mlp(), bundle, epochs=1, progress=True)
    prune(mlp(), "snip", 0.5, bundle, progress=True)
    search(mlp(), bundle, sparsity=0.5, epochs=1, progress=True)
    assert log.getvalue() == ""


def test_data_with_more_classes_than_the_model_gives_outputs_is_named():
    ten = data.load("synthetic", num_classes=10, input_shape=(8,), n_train=60, n_test=30)
    message = r"^data: 10 classes, but the model's last layer \(Linear\) gives 3 outputs$"
    for call in (lambda: train(mlp(), ten, epochs=1, progress=False), lambda: prune(mlp(), "snip", 0.5, ten),
                 lambda: search(mlp(), ten, sparsity=0.5, epochs=1, progress=False)):
        with pytest.raises(ValueError, match=message):
            call()


def test_model_and_agent_files_carry_a_format_marker_and_refuse_another(tmp_path):
    import json
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from panning.pbt.rl.agent import AGENTS, read_agent_file

    models.save(tmp_path / "m.safetensors", mlp(), name="mlp", input_shape=(8,), num_classes=3, width=0.1)
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "panning.model/1" and json.loads(metadata["panning.model"])["name"] == "mlp"
    save_file(mlp().state_dict(), str(tmp_path / "v9.safetensors"),
              metadata={**metadata, "format": "panning.model/9"})
    with pytest.raises(ValueError, match=r"^--weights: '.*v9.safetensors' is not a model saved by panning.models."
                                         r"save: it is a 'panning.model/9' file, not panning.model/1$"):
        models.load(tmp_path / "v9.safetensors", name="--weights")
    shipped = AGENTS / "cnn1d-w4-mnist1d"
    spec = json.loads(shipped.with_name(shipped.name + ".json").read_text())
    assert "network" in read_agent_file(shipped)  # saved before the marker: read as this format
    (tmp_path / "a.json").write_text(json.dumps({**spec, "format": "panning.agent/9"}))
    shutil.copy(shipped.with_name(shipped.name + ".safetensors"), tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match=r"a.json': not a saved panning agent \(it is a 'panning.agent/9' file, "
                                         r"not panning.agent/1\)$"):
        read_agent_file(tmp_path / "a")
