"""The compressed path of SparseLinear: its trainable state is the kept values, while everything outside the
layer (state_dict, Arena, Masks, densify, functional_call) keeps seeing the dense `weight`."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from panning import criteria, ops
from panning.arena import Arena
from panning.masks import Masks
from panning.nn import SparseLinear, densify, layers, sparsify
from panning.ops import masked_linear as ops_masked


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3))


def masks_of(model: nn.Module, keep: float = 0.3, seed: int = 1) -> Masks:
    g = torch.Generator().manual_seed(seed)
    return Masks({name: torch.rand(p.shape, generator=g) < keep for name, p in model.named_parameters()
                  if name.endswith("weight")})


def batch(n: int = 8, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 12, generator=g)), torch.randint(0, 3, (8,), generator=g)
                                    ).backward()
        opt.step()


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_gradient_and_optimizer_state_are_sized_by_the_kept_count(optimizer):
    masks = masks_of(mlp())
    model = sparsify(mlp(), masks, mode="compressed")
    opt = OPTIMIZERS[optimizer](model.parameters())
    train(model, opt, 2)
    for name, mask in masks.items():
        layer = model.get_submodule(name.rpartition(".")[0])
        kept = int(mask.sum())
        assert layer.values.shape == (kept,) and layer.values.grad.shape == (kept,)
        assert not layer.weight.requires_grad and layer.weight.grad is None and layer.weight not in opt.state
        assert {t.numel() for t in opt.state[layer.values].values() if t.dim() > 0} == {kept}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_on_either_path_gives_the_same_weights(optimizer):
    masks = masks_of(mlp())
    models = {mode: sparsify(mlp(), masks, mode=mode) for mode in ("masked", "compressed")}
    for model in models.values():
        train(model, OPTIMIZERS[optimizer](model.parameters()), 5)
    masked, compressed = (models[m].state_dict() for m in ("masked", "compressed"))
    assert masked.keys() == compressed.keys()  # no `values` in checkpoints
    for key in masked:
        torch.testing.assert_close(compressed[key], masked[key], rtol=1e-5, atol=1e-6)


def test_writes_into_the_weight_reach_the_values():
    masks = masks_of(mlp())
    model, twin = sparsify(mlp(), masks, mode="compressed"), sparsify(mlp(), masks, mode="masked")
    x, _ = batch()
    for net in (model, twin):  # Arena makes every weight a view into one flat buffer and writes through it
        arena = Arena(net)
        arena.weights.mul_(2.0)
    torch.testing.assert_close(model(x), twin(x))
    donor = mlp()
    for p in donor.parameters():
        nn.init.normal_(p)
    model.load_state_dict(donor.state_dict())  # a dense checkpoint: the loaded weights, pruned by our masks
    twin.load_state_dict(donor.state_dict())
    torch.testing.assert_close(model(x), twin(x))
    assert [layer.path for layer in model if isinstance(layer, SparseLinear)] == ["compressed"] * 3


def test_a_new_mask_during_training_drops_the_stale_optimizer_state():
    torch.manual_seed(0)
    layer = SparseLinear(12, 3, bias=False, mode="compressed")
    first = torch.rand(3, 12, generator=torch.Generator().manual_seed(4)) < 0.5
    second = torch.rand(3, 12, generator=torch.Generator().manual_seed(5)) < 0.3
    layer.set_mask(first)
    twin = copy.deepcopy(layer)
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    train(layer, opt, 2)
    twin_opt = torch.optim.Adam(twin.parameters(), lr=0.01)
    train(twin, twin_opt, 2)
    for net in (layer, twin):
        net.set_mask(second)
    twin_opt = torch.optim.Adam(twin.parameters(), lr=0.01)  # what a user would do by hand: a new optimizer
    train(layer, opt, 2, seed=6)
    train(twin, twin_opt, 2, seed=6)
    assert layer.values.shape == (int(second.sum()),)
    torch.testing.assert_close(layer.weight, twin.weight, rtol=0, atol=0)
    assert not layer.weight[~second].any()


def test_criteria_see_the_weights_through_functional_call():
    """GraSP differentiates the backward (a double backward); on a compressed model it sees the weights the
    arena hands it, as on a plain masked model."""
    masks = masks_of(mlp(), keep=0.6)
    scores = {}
    for mode in ("masked", "compressed"):
        model = sparsify(mlp(), masks, mode=mode)
        scores[mode] = criteria.grasp(model, Arena(model, share=False), batch())
    reference = Masks(masks).apply(mlp())
    expected = criteria.grasp(reference, Arena(reference, share=False), batch())
    torch.testing.assert_close(scores["compressed"], expected)
    torch.testing.assert_close(scores["masked"], expected)


def test_leaving_the_path_keeps_the_weights_and_gives_the_weight_back_its_gradient():
    masks = masks_of(mlp())
    model = sparsify(mlp(), masks, mode="compressed")
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), 2)
    layer = model[2]
    trained = layer.weight.detach().clone()
    layer.mode = "masked"
    assert layer.values is None and layer.weight.requires_grad and torch.equal(layer.weight, trained)
    assert "2.values" not in dict(model.named_parameters())
    layer.mode = "compressed"
    assert torch.equal(layer.values, trained[masks["2.weight"]])
    plain = densify(model)
    assert all(p.requires_grad for p in plain.parameters())
    assert torch.equal(plain[2].weight, trained)


def test_copies_and_conversions_stay_in_sync():
    masks = masks_of(mlp())
    model = sparsify(mlp(), masks, mode="compressed")
    clone = copy.deepcopy(model)
    opt = torch.optim.SGD(clone.parameters(), lr=0.5)
    train(clone, opt, 1)
    assert not torch.equal(clone[0].weight, model[0].weight)  # the copy's step reached its own weight only
    torch.testing.assert_close(clone[0].weight[masks["0.weight"]], clone[0].values)
    wide = clone.double()
    x, _ = batch()
    reference = Masks(masks).apply(densify(copy.deepcopy(wide)))
    torch.testing.assert_close(wide(x.double()), reference(x.double()))
    assert wide[0].values.dtype == torch.float64 and wide[0].path == "compressed"


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Unflatten(2, (2, 5)),
                         nn.Conv2d(4, 3, (2, 3), stride=(1, 2), dilation=(1, 1)), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6, 3))


def test_convolutions_stay_masked_without_the_compressed_op(monkeypatch):
    monkeypatch.delattr(ops, "sparse_conv2d", raising=False)
    model = sparsify(cnn(), masks_of(cnn()), mode="compressed")
    assert model[3].path == "masked" and model[6].path == "compressed"


def test_compressed_convolutions_train_like_masked_ones():
    masks = masks_of(cnn(), keep=0.5)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(5, 2, 10, generator=g), torch.randint(0, 3, (5,), generator=g)
    states = {}
    for mode in ("masked", "compressed"):
        model = sparsify(cnn(), masks, mode=mode)
        assert [model[i].path for i in (0, 3, 6)] == [mode] * 3
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        if mode == "compressed":
            assert model[3].values.numel() == int(masks["3.weight"].sum()) and model[3].weight.grad is None
        states[mode] = model.state_dict()
    for key, value in states["masked"].items():
        torch.testing.assert_close(states["compressed"][key], value, rtol=1e-5, atol=1e-6)


def test_inference_on_the_masked_path_uses_the_baked_weights(monkeypatch):
    """Without a gradient to mask, the masked path runs the plain layer on the weights (zero behind the mask);
    with scores, or a weight substituted by functional_call (not zero behind the mask), it still masks."""
    masks = masks_of(mlp())
    model = sparsify(mlp(), masks, mode="masked")
    x, _ = batch()
    expected = Masks(masks).apply(mlp())(x)
    called = []
    monkeypatch.setattr(ops, "masked_linear", lambda *args, **kwargs: called.append(1) or ops_masked(*args, **kwargs))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert not called
    torch.testing.assert_close(model(x), expected)  # training: the op masks the gradient
    assert len(called) == 3
    dense = {name: p.detach() for name, p in mlp().named_parameters()}  # not zero behind the masks
    with torch.no_grad():
        torch.testing.assert_close(torch.func.functional_call(model, dense, (x,)), expected)


def test_a_checkpoint_loaded_by_assignment_becomes_the_mirrored_weight():
    masks = masks_of(mlp())
    model = sparsify(mlp(), masks, mode="compressed")
    donor = mlp()
    for p in donor.parameters():
        nn.init.normal_(p)
    model.load_state_dict(donor.state_dict(), assign=True)  # new Parameter objects, no masks: ours are kept
    x, _ = batch()
    torch.testing.assert_close(model(x), Masks(masks).apply(donor)(x))
    assert model[0].path == "compressed" and not model[0].weight.requires_grad
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model[0].weight.detach().clone()
    train(model, opt, 1)
    assert not torch.equal(model[0].weight, before)  # the step reached the loaded weight
    torch.testing.assert_close(model[0].weight[masks["0.weight"]], model[0].values)


needs_conv_kernel = pytest.mark.skipif(not layers.compiled_sparse_kernel("cpu", "sparse_conv_fwd"),
                                       reason="no compiled sparse_conv kernel (panning._C is not built)")


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(96, 3))


def train_convnet(model: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    g = torch.Generator().manual_seed(8)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 3, 9, 9, generator=g)),
                                    torch.randint(0, 3, (8,), generator=g)).backward()
        opt.step()


@needs_conv_kernel
@pytest.mark.parametrize("kernel", ["sparse", "dense"])
def test_auto_convolutions_train_their_values_on_either_kernel_like_the_masked_path(monkeypatch, kernel):
    asked = []
    monkeypatch.setattr(layers, "sparse_conv_wins",
                        lambda call, threads, training, device: asked.append((call, training)) or kernel == "sparse")
    sparse_conv2d, ran = ops.sparse_conv2d, []
    monkeypatch.setattr(ops, "sparse_conv2d", lambda *args, **kwargs: ran.append(1) or sparse_conv2d(*args, **kwargs))
    masks = masks_of(convnet())
    models = {mode: sparsify(convnet(), masks, mode=mode) for mode in ("masked", "auto")}
    auto = models["auto"]
    assert [auto[i].path_detail for i in (0, 2)] == ["compressed (kernel per call)"] * 2
    for model in models.values():
        train_convnet(model, 3)
    assert len(ran) == (6 if kernel == "sparse" else 0)
    kept = int(masks["0.weight"].sum())
    # the first layer's call: batch 8, 3 x 9 x 9 inputs, 8 outputs over 3 x 3 x 3 inputs at 9 x 9 positions
    assert asked[0][0][:7] == (8, 243, 243, 8, 27, 81, kept) and asked[0][1] is True
    assert auto[0].weight.grad is None and auto[0].values.numel() == kept
    masked, trained = models["masked"].state_dict(), auto.state_dict()
    assert masked.keys() == trained.keys()
    for key in masked:
        torch.testing.assert_close(trained[key], masked[key], rtol=1e-5, atol=1e-6)


@needs_conv_kernel
def test_auto_convolutions_infer_on_the_mirror_weight_and_agree_with_training(monkeypatch):
    masks = masks_of(convnet())
    model = sparsify(convnet(), masks, mode="auto")
    train_convnet(model, 2)  # the values moved: inference must see them in the mirror
    x = torch.randn(5, 3, 9, 9, generator=torch.Generator().manual_seed(9))
    expected = Masks(masks).apply(densify(copy.deepcopy(model)))(x)
    with torch.no_grad():  # the real cost model, per sample (batch 1) and at batch 5
        alone = torch.cat([model.eval()(x[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(alone, expected)
    torch.testing.assert_close(model.train()(x), expected)
    seen = []
    conv_forward = nn.Conv2d._conv_forward
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, x, w, b: seen.append(w) or conv_forward(self, x, w, b))
    monkeypatch.setattr(layers, "sparse_conv_wins", lambda call, threads, training, device: training)
    x, expected = x[:4], expected[:4]  # a batch the layers have not chosen a kernel for yet
    y_train = model.train()(x)  # training: the sparse kernel
    assert not seen
    with torch.no_grad():
        y_eval = model.eval()(x)
    assert seen[0] is model[0].weight and seen[1] is model[2].weight  # the mirror itself, no copy
    torch.testing.assert_close(y_train, expected)
    torch.testing.assert_close(y_eval, expected)


def test_auto_convolutions_stay_masked_without_a_compiled_kernel(monkeypatch):
    monkeypatch.setattr(layers, "compiled_sparse_kernel", lambda device_type, op: op != "sparse_conv_fwd")
    model = sparsify(convnet(), masks_of(convnet()), mode="auto")
    assert model[0].path == model[2].path == "masked" == model[0].path_detail
