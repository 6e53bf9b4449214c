"""panning.train: learning, exact masks under SGD and Adam, checkpoint/resume equivalence, argument errors."""
import dataclasses
import math

import pytest
import torch
from torch import nn

import panning.data as data
import panning.models as models
import panning.train as train_module
from panning.config import ConfigError
from panning.nn import SparseLayer, global_prune
from panning.train import RECIPES, EpochStats, Recipe, TrainResult, evaluate, train


@pytest.fixture(scope="module")
def bundle():
    return data.load("synthetic", num_classes=4, input_shape=(1, 16), n_train=192, n_test=64, noise=0.5)


def _model(name="mlp", shape=(1, 16), seed=0, **kw):
    torch.manual_seed(seed)
    return models.build(name, shape, 4, width=0.25, **kw)


def _random_masks(model, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density for n, p in model.named_parameters() if p.dim() > 1}


def test_training_learns_and_reports_history(bundle):
    model = _model()
    before = evaluate(model, bundle.test)
    result = train(model, bundle, epochs=3, batch_size=32, lr=0.05, progress=False)
    assert isinstance(result, TrainResult) and result.epochs == 3
    assert [h.epoch for h in result.history] == [1, 2, 3] and all(isinstance(h, EpochStats) for h in result.history)
    assert result.test_acc > max(before[1], 0.8) and result.test_loss < before[0]
    assert (result.test_loss, result.test_acc) == pytest.approx(evaluate(model, bundle.test))
    assert result.history[-1].lr == pytest.approx(0.0, abs=1e-12)  # cosine ends at zero
    assert result.wall_time > 0


def test_same_seed_same_weights_other_seed_differs(bundle):
    runs = []
    for seed in (0, 0, 1):
        model = _model()
        train(model, bundle, epochs=1, batch_size=32, seed=seed, progress=False)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_evaluate_restores_mode(bundle):
    model = _model("cnn1d")
    model.train()
    loss, acc = evaluate(model, bundle.test, batch_size=7)
    assert model.training and math.isfinite(loss) and 0 <= acc <= 1
    with pytest.raises(TypeError, match="dataset: expected a torch Dataset of"):
        evaluate(model, [(torch.zeros(1, 16), 0)])


@pytest.mark.parametrize(
    "optimizer, extra",
    [("sgd", dict(momentum=0.9, weight_decay=5e-4)), ("sgd", dict(nesterov=True)), ("adam", dict(weight_decay=5e-4))],
)
@pytest.mark.parametrize("mode", ["masked", "compressed"])
def test_masked_weights_stay_exactly_zero(bundle, optimizer, extra, mode):
    model = _model("cnn1d")
    masks = _random_masks(model)
    params = dict(model.named_parameters())
    untouched = {n: params[n].detach().clone() for n in params}
    result = train(model, bundle, epochs=2, batch_size=32, lr=0.05, optimizer=optimizer, masks=masks, mode=mode,
                   progress=False, **extra)
    linear = {name.rpartition(".")[0] for name in masks if isinstance(model.get_parameter(name), nn.Parameter)
              and type(model.get_submodule(name.rpartition(".")[0])) is nn.Linear}
    assert linear and {result.paths[name] for name in linear} == {mode}
    assert set(result.paths) == {name.rpartition(".")[0] for name in masks}
    assert not any(isinstance(m, SparseLayer) for m in model.modules())  # the model's own layers come back
    assert dict(model.named_parameters()) == params
    for name, mask in masks.items():
        p = params[name]
        assert torch.all(p[~mask] == 0), name
        assert not torch.equal(p[mask], untouched[name][mask]), name  # kept weights did train


def test_optimizer_state_stays_zero_at_masked_positions(bundle, tmp_path):
    for optimizer in ("sgd", "adam"):
        model = _model("mlp")
        masks = _random_masks(model, seed=1)
        ckpt = tmp_path / f"{optimizer}.pt"
        train(model, bundle, epochs=1, batch_size=32, optimizer=optimizer, masks=masks, checkpoint=ckpt, progress=False)
        state = torch.load(ckpt, weights_only=True)["optimizer"]["state"]
        names = [n for n, _ in model.named_parameters()]
        for index, buffers in state.items():
            mask = masks.get(names[index])
            if mask is None:
                continue
            for key, value in buffers.items():
                if value.shape == mask.shape:
                    assert torch.all(value[~mask] == 0), (optimizer, names[index], key)


def test_masks_are_validated(bundle):
    model = _model()
    good = _random_masks(model)
    name = next(iter(good))
    cases = [
        ({"nope.weight": good[name]}, ValueError, "masks: no parameter named"),
        ({name: good[name].float()}, TypeError, "masks: expected a mapping .*, got entry '.*' of torch.float32"),
        ({name: good[name][:1]}, ValueError, "masks: .* has shape"),
        ([good[name]], TypeError, "masks: expected a mapping"),
    ]
    for masks, error, message in cases:
        with pytest.raises(error, match=message):
            train(model, bundle, epochs=1, masks=masks, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "epochs: expected a positive int"),
        (dict(epochs=1, batch_size=0), "batch_size"),
        (dict(epochs=1, lr=0), r"lr: expected a number in \(0, inf\]"),
        (dict(epochs=1, optimizer="rmsprop"), "optimizer: expected one of sgd, adam"),
        (dict(epochs=1, schedule="step"), "schedule: expected one of"),
        (dict(epochs=1, seed=-1), r"seed: expected an int in \[0, 2\*\*32\)"),
    ],
)
def test_arguments_are_validated(bundle, kwargs, message):
    with pytest.raises(ConfigError, match=message) as refused:
        train(_model(), bundle, progress=False, **kwargs)
    assert refused.value.field in kwargs and str(refused.value) == f"{refused.value.field}: {refused.value.reason}"
    with pytest.raises(ConfigError, match=message):  # the same check builds a Recipe: one check path
        Recipe(**{"epochs": 1, **kwargs})


def test_keywords_override_a_recipe(bundle):
    recipe = Recipe(epochs=1, batch_size=32, lr=0.05, seed=3)
    given, overridden = _model(), _model()
    train(given, bundle, recipe, progress=False)
    train(overridden, bundle, Recipe(epochs=1, batch_size=32, lr=0.5, seed=3), lr=0.05, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(given.state_dict().values(), overridden.state_dict().values()))
    with pytest.raises(ConfigError, match=r"^lr: expected a number in \(0, inf\]"):
        train(_model(), bundle, recipe, lr=-1.0, progress=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.lr = 1.0


class _Crash(Exception):
    pass


@pytest.mark.parametrize("name, optimizer, mode", [("cnn1d", "sgd", "auto"), ("cnn2d", "adam", "auto"),
                                                   ("cnn1d", "sgd", "compressed")])
def test_resume_gives_bitwise_the_same_weights(tmp_path, monkeypatch, name, optimizer, mode):
    shape = (1, 16) if name == "cnn1d" else (1, 4, 4)
    bundle = data.load("synthetic", num_classes=4, input_shape=shape, n_train=64, n_test=32)
    # an augmentation too, so that its random draws are covered by the resume
    noisy = lambda x, g: x + 0.1 * torch.randn(x.shape, generator=g)  # noqa: E731
    bundle = dataclasses.replace(bundle, augment=noisy)
    kwargs = dict(epochs=2, batch_size=16, lr=0.05, optimizer=optimizer, seed=7, mode=mode, progress=False)

    straight = _model(name, shape)
    masks = _random_masks(straight)
    full = train(straight, bundle, masks=masks, **kwargs)

    # The same run, killed while evaluating epoch 2: its checkpoint holds epoch 1.
    ckpt = tmp_path / "run" / "ckpt.pt"
    calls = []

    def evaluate_then_crash(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise _Crash
        return evaluate(*args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "evaluate", evaluate_then_crash)
        with pytest.raises(_Crash):
            train(_model(name, shape), bundle, masks=masks, checkpoint=ckpt, **kwargs)
    assert torch.load(ckpt, weights_only=True)["history"][-1]["epoch"] == 1

    resumed = _model(name, shape, seed=99)  # another init: everything must come from the checkpoint
    result = train(resumed, bundle, masks=masks, checkpoint=ckpt, **kwargs)
    assert [h.epoch for h in result.history] == [1, 2]
    assert result.history[1].test_acc == full.history[1].test_acc
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in ckpt.parent.iterdir()] == ["ckpt.pt"]  # no temporary files left behind


def test_resume_refuses_another_run(bundle, tmp_path):
    ckpt = tmp_path / "c.pt"
    train(_model(), bundle, epochs=1, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match=r"belongs to another run \(lr "):
        train(_model(), bundle, epochs=1, lr=0.3, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match=r"^checkpoint: '.*c.pt' belongs to another run \(other masks\); continue"):
        model = _model()
        train(model, bundle, epochs=1, masks=_random_masks(model), checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match=r"^checkpoint: '.*c.pt' belongs to another run \(another model: tensors: "
                                         r"\d+ missing \(e.g. [\w.]+\), \d+ unexpected"):
        train(_model("cnn1d"), bundle, epochs=1, checkpoint=ckpt, progress=False)
    model = _model()
    masks = _random_masks(model)
    masked = tmp_path / "masked.pt"
    train(model, bundle, epochs=1, masks=masks, mode="masked", checkpoint=masked, progress=False)
    with pytest.raises(ValueError, match=r"belongs to another run \(its layers on other paths: .*'masked'.* there, "
                                         r".*'compressed'"):
        train(_model(), bundle, epochs=1, masks=masks, mode="compressed", checkpoint=masked, progress=False)
    finished = train(_model(), bundle, epochs=1, checkpoint=ckpt, progress=False)  # already complete: no work
    assert finished.epochs == 1
    fresh = train(_model(), bundle, epochs=1, lr=0.3, checkpoint=ckpt, resume=False, progress=False)
    assert fresh.epochs == 1 and torch.load(ckpt, weights_only=True)["config"]["lr"] == 0.3
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"^checkpoint: '.*c.pt' is neither a torch file nor a readable safetensors"):
        train(_model(), bundle, epochs=1, checkpoint=ckpt, progress=False)


def test_recipes_cover_every_model():
    assert set(RECIPES) == set(models.available())
    for recipe in RECIPES.values():
        assert {"epochs", "batch_size", "lr", "optimizer"} <= set(recipe)


def test_all_true_mask_keeps_every_weight(bundle):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    masks = {"1.weight": torch.ones(4, 16, dtype=torch.bool)}
    train(model, bundle, epochs=1, masks=masks, progress=False)
    assert torch.count_nonzero(model[1].weight) == 64


@pytest.mark.slow
def test_the_compressed_path_trains_the_protocol_network_to_the_masked_paths_accuracy():
    """cnn1d x4 on MNIST-1D at 98% (magnitude masks), the protocol's recipe: the linear layer trained on its kept
    values (compressed) reaches the masked path's test accuracy to within 0.1 point."""
    protocol = train_module.PROTOCOL["mnist1d"]
    bundle = data.load("mnist1d")
    torch.manual_seed(0)
    masks = global_prune(models.build(protocol["model"], bundle.input_shape, bundle.num_classes,
                                      width=protocol["width"]), 0.98)
    results = {}
    for mode in ("masked", "compressed"):
        torch.manual_seed(0)
        model = models.build(protocol["model"], bundle.input_shape, bundle.num_classes, width=protocol["width"])
        results[mode] = train(model, bundle, **protocol["recipe"], masks=masks, mode=mode, progress=False)
    assert "compressed" in results["compressed"].paths.values()
    assert abs(results["compressed"].test_acc - results["masked"].test_acc) <= 0.001
