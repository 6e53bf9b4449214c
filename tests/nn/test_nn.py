"""Sparse layers, sparsify/densify, checkpoints across both, and torch.compile."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from panning import ops
from panning.arena import Arena
from panning.masks import Masks
from panning.nn import SparseConv1d, SparseConv2d, SparseLinear, cost, dense_state_dict, densify, layers, sparsify

MODES = ["masked", "compressed"]


def net() -> nn.Module:
    """Conv1d -> Conv2d -> Linear -> Linear: every supported layer type, on inputs (N, 2, 10)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Unflatten(2, (2, 4)), nn.Conv2d(4, 3, (1, 3)),
                         nn.ReLU(), nn.Flatten(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 5))


def random_masks(model: nn.Module, keep: float = 0.4, seed: int = 1) -> Masks:
    g = torch.Generator().manual_seed(seed)
    return Masks({name: torch.rand(p.shape, generator=g) < keep for name, p in model.named_parameters()
                  if name.endswith("weight")})


def inputs(n: int = 6, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, 2, 10, generator=torch.Generator().manual_seed(seed))


def masked_copy(model: nn.Module, masks: Masks) -> nn.Module:
    return Masks(masks).apply(copy.deepcopy(model))


def weight_grad(model: nn.Module, name: str) -> torch.Tensor:
    """The gradient a sparse layer's weight received, dense: on the compressed path it went to `values` (the kept
    entries in row-major order) and the weight itself got none."""
    layer = model.get_submodule(name.rpartition(".")[0])
    if layer.path == "masked":
        return layer.weight.grad
    assert layer.weight.grad is None
    return torch.zeros_like(layer.weight).masked_scatter_(layer.mask, layer.values.grad)


@pytest.mark.parametrize("mode", MODES)
def test_forward_and_gradients_match_the_dense_model_with_masked_weights(mode):
    dense, masks = net(), random_masks(net())
    reference = masked_copy(dense, masks)
    sparse = sparsify(copy.deepcopy(dense), masks, mode=mode)
    assert [type(m) for m in sparse if isinstance(m, layers.SparseLayer)] == [SparseConv1d, SparseConv2d,
                                                                               SparseLinear, SparseLinear]
    assert sparse[6].path == mode and sparse[8].path == mode
    x = inputs()
    y_ref, y = reference(x), sparse(x)
    torch.testing.assert_close(y, y_ref)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    for name, p_ref in reference.named_parameters():
        if name in masks:
            torch.testing.assert_close(weight_grad(sparse, name), p_ref.grad * masks[name])
            assert not sparse.get_parameter(name)[~masks[name]].any()
        else:
            torch.testing.assert_close(sparse.get_parameter(name).grad, p_ref.grad)
    trainable = {name for name, p in sparse.named_parameters() if p.requires_grad}
    assert {"6.values", "8.values"} <= trainable if mode == "compressed" else {"6.weight", "8.weight"} <= trainable


OPTIMIZERS = {
    "sgd_momentum_wd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.05),
    "adam_wd": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.05),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.05),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_masked_weights_stay_exactly_zero_through_training(mode, optimizer):
    masks = random_masks(net())
    model = sparsify(net(), masks, mode=mode)
    params = dict(model.named_parameters())
    start = {name: p.detach().clone() for name, p in params.items()}
    opt = OPTIMIZERS[optimizer](model.parameters())
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(8, 2, 10, generator=g)).square().mean().backward()
        for name in masks:  # the op masks the gradient, so weight decay (wd * w) adds zero there too
            assert not weight_grad(model, name)[~masks[name]].any()
        opt.step()
    # no forward since the last step: the weights read here were written back by the optimizer hook
    for name, mask in masks.items():
        assert not params[name][~mask].any(), name
        assert not torch.equal(params[name][mask], start[name][mask]), f"{name} did not train"
    assert Masks.from_model(model) == masks


def test_round_trip_sparsify_save_load_densify(tmp_path):
    masks = random_masks(net())
    trained = sparsify(net(), masks)
    opt = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        trained(inputs()).sum().backward()
        opt.step()
    torch.save(trained.state_dict(), tmp_path / "sparse.pt")
    checkpoint = torch.load(tmp_path / "sparse.pt", weights_only=True)

    fresh = net()  # differently initialized, all weights kept: the checkpoint brings weights and masks
    for p in fresh.parameters():
        nn.init.normal_(p)
    restored = sparsify(fresh, Masks.ones(Arena(fresh, share=False)))
    restored.load_state_dict(checkpoint)
    assert Masks.from_model(restored) == masks
    plain = densify(restored)
    assert not any(isinstance(m, layers.SparseLayer) for m in plain.modules())
    assert list(plain.state_dict()) == list(net().state_dict())
    torch.testing.assert_close(plain(inputs()), trained(inputs()), rtol=0, atol=0)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(value, checkpoint[name], rtol=0, atol=0)


def test_dense_checkpoint_loads_strictly_into_a_sparsified_model_keeping_its_masks():
    masks = random_masks(net())
    sparse = sparsify(net(), masks)
    torch.manual_seed(9)
    donor = net()
    for p in donor.parameters():
        nn.init.normal_(p)
    result = sparse.load_state_dict(donor.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert Masks.from_model(sparse) == masks
    torch.testing.assert_close(sparse(inputs()), masked_copy(donor, masks)(inputs()))
    for name, mask in masks.items():  # zeros baked in at load
        assert not sparse.get_parameter(name)[~mask].any()


def test_sparse_checkpoint_loads_into_a_plain_model():
    masks = random_masks(net())
    sparse = sparsify(net(), masks)
    checkpoint = sparse.state_dict()
    assert {k for k in checkpoint if k.endswith("mask")} == {n[:-len("weight")] + "mask" for n in masks}
    plain = net()
    plain.load_state_dict(dense_state_dict(checkpoint))  # strict
    torch.testing.assert_close(plain(inputs()), sparse(inputs()))
    lenient = net()
    result = lenient.load_state_dict(checkpoint, strict=False)  # the weights are already zero behind the masks
    assert sorted(result.unexpected_keys) == sorted(k for k in checkpoint if k.endswith("mask"))
    torch.testing.assert_close(lenient(inputs()), sparse(inputs()))


def test_a_mask_of_another_dtype_in_a_checkpoint_is_refused():
    sparse = sparsify(net(), random_masks(net()))
    checkpoint = sparse.state_dict()
    checkpoint["8.mask"] = checkpoint["8.mask"].float()
    with pytest.raises(RuntimeError, match="8.mask: expected a bool mask"):
        sparse.load_state_dict(checkpoint)


class Subclassed(nn.Linear):
    pass


def mixed_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv3d(2, 2, 1), nn.Flatten(),
                         nn.Linear(8, 4), Subclassed(4, 3))


def bad_masks():
    good = {"0.weight": torch.ones(2, 1, 3, 3, dtype=torch.bool), "4.weight": torch.ones(4, 8, dtype=torch.bool)}
    return [
        ({**good, "4.weight": torch.ones(4, 7, dtype=torch.bool)}, ValueError, "4.weight.*shape"),
        ({**good, "4.weight": torch.ones(4, 8)}, TypeError, "bool tensors.*'4.weight' of torch.float32"),
        ({**good, "4.bias": torch.ones(4, dtype=torch.bool)}, ValueError, "4.bias.*not a prunable parameter"),
        ({**good, "1.weight": torch.ones(2, dtype=torch.bool)}, ValueError, "BatchNorm2d.*none of its parameters"),
        ({**good, "2.weight": torch.ones(2, 2, 1, 1, dtype=torch.bool)}, ValueError, "2.weight.*shape"),
        ({**good, "9.weight": torch.ones(3, dtype=torch.bool)}, ValueError, "9.weight.*no module"),
        ([("4.weight", torch.ones(4, 8, dtype=torch.bool))], TypeError, "masks: expected a mapping"),
    ]


def test_bad_input_raises_and_leaves_the_model_unchanged():
    model = mixed_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model]
    for masks, error, message in bad_masks():
        with pytest.raises(error, match=message):
            sparsify(model, masks)
    with pytest.raises(ValueError, match="mode"):
        sparsify(model, {"4.weight": torch.zeros(4, 8, dtype=torch.bool)}, mode="sparse")
    prune.l1_unstructured(model[4], "weight", amount=0.5)
    with pytest.raises(ValueError, match="hooks.*prune.remove"):
        sparsify(model, {"0.weight": torch.zeros(2, 1, 3, 3, dtype=torch.bool),
                         "4.weight": torch.zeros(4, 8, dtype=torch.bool)})
    prune.remove(model[4], "weight")
    model[4].weight.data.copy_(before["4.weight"])
    assert [type(m) for m in model] == types
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_layer_level_errors():
    layer = SparseLinear(4, 3)
    with pytest.raises(ValueError, match="mask: expected shape"):
        layer.set_mask(torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask: expected a bool"):
        layer.set_mask(torch.ones(3, 4))
    with pytest.raises(ValueError, match="mode"):
        layer.mode = "dense"
    with pytest.raises(TypeError, match="module: expected a Linear"):
        SparseLinear.from_dense(nn.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match="init: expected shape"):
        layer.attach_scores(torch.zeros(2))
    assert layer.mask.all() and layer.scores is None


def test_single_layers_shared_layers_and_drop_in_construction():
    single = nn.Linear(6, 3)
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(0)) < 0.5
    sparse = sparsify(single, {"weight": mask})
    assert type(sparse) is SparseLinear and sparse.weight is single.weight and torch.equal(sparse.mask, mask)
    assert type(densify(sparse)) is nn.Linear

    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    sparsify(model, {"0.weight": torch.eye(4, dtype=torch.bool)})
    assert model[0] is model[2] and isinstance(model[0], SparseLinear)
    block = nn.Sequential(nn.Linear(3, 3))
    nested = nn.Sequential(block, block)
    sparsify(nested, {"0.0.weight": torch.eye(3, dtype=torch.bool)})
    assert isinstance(nested[1][0], SparseLinear) and type(densify(nested)[1][0]) is nn.Linear

    built = nn.Sequential(SparseLinear(5, 4, mode="masked"), SparseConv2d(1, 2, 3, padding=1))
    assert built[0].mask.all() and built[0].mode == "masked" and built[1].mask.shape == (2, 1, 3, 3)
    assert set(built.state_dict()) == {"0.weight", "0.bias", "0.mask", "1.weight", "1.bias", "1.mask"}


def test_sparsify_again_updates_masks_and_apply_sets_layer_masks():
    model = sparsify(net(), random_masks(net(), seed=1))
    layer = model[8]
    buffer = layer.mask
    tighter = random_masks(net(), keep=0.2, seed=4)
    sparsify(model, tighter)
    assert model[8] is layer and layer.mask is buffer and Masks.from_model(model) == tighter
    loosest = random_masks(net(), keep=0.9, seed=5)
    loosest.apply(model)
    assert Masks.from_model(model) == loosest
    for name, mask in tighter.items():  # weights pruned before stay zero: a mask cannot revive them
        assert not model.get_parameter(name)[~mask].any()


@pytest.mark.parametrize("layer_index", [0, 8])
def test_scores_get_the_straight_through_gradient_and_keep_the_weights(layer_index):
    dense, masks = net(), random_masks(net())
    model = sparsify(copy.deepcopy(dense), masks, scores=True)
    layer = model[layer_index]
    name = f"{layer_index}.weight"
    assert torch.equal(layer.weight, dense.get_parameter(name))  # nothing baked: the mask may move
    torch.testing.assert_close(layer.scores, dense.get_parameter(name).abs())
    x = inputs()
    model(x).square().sum().backward()
    reference = masked_copy(dense, masks)
    effective = reference.get_parameter(name)
    reference(x).square().sum().backward()
    torch.testing.assert_close(layer.scores.grad, effective.grad * dense.get_parameter(name))
    torch.testing.assert_close(layer.weight.grad, effective.grad * masks[name])
    layer.remove_scores()
    assert layer.scores is None and not layer.weight[~masks[name]].any()


def test_compressed_layout_follows_mask_and_weight_changes(monkeypatch):
    torch.manual_seed(0)
    layer = SparseLinear(16, 8, mode="compressed")
    twin = SparseLinear(16, 8, mode="masked")
    twin.load_state_dict(layer.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 16, generator=g)
    for _ in range(3):
        mask = torch.rand(8, 16, generator=g) < 0.3
        layer.set_mask(mask)
        twin.set_mask(mask)
        torch.testing.assert_close(layer(x), twin(x))
        with torch.no_grad():  # weights change between steps: values are gathered at every forward
            layer.weight.add_(1.0)
            twin.weight.add_(1.0)
        torch.testing.assert_close(layer(x), twin(x))
    compressions, to_sparse = [], ops.to_sparse  # the layer builds a mask's layout with the public ops.to_sparse
    monkeypatch.setattr(ops, "to_sparse", lambda *args, **kwargs: compressions.append(1) or to_sparse(*args, **kwargs))
    layer.mask.copy_(layer.mask.clone())  # same content written in place (as DDP's buffer broadcast does)
    torch.testing.assert_close(layer(x), twin(x))
    assert not compressions  # the layout was kept
    layer.mask.copy_(~layer.mask)  # new content written in place: a new layout
    twin.set_mask(layer.mask)
    torch.testing.assert_close(layer(x), twin(x))
    assert compressions


def test_auto_mode_follows_the_kernels_and_the_cost_model(monkeypatch):
    layer = SparseLinear(100, 10)
    sparse_mask = torch.zeros(10, 100, dtype=torch.bool)
    sparse_mask[:, :5] = True  # density 0.05
    # What the ops report: only the reference backend (whose sparse kernel is a dense matmul), then cpp too.
    reference = {"available": True, "devices": ("cpu", "cuda"), "ops": ("sparse_linear_fwd",)}
    report = {"reference": reference, "cpp": dict(reference, available=False)}
    asked = []
    monkeypatch.setattr(layers.ops, "backends", lambda: report)
    monkeypatch.setattr(layers, "compiled_sparse_kernel", layers.compiled_sparse_kernel.__wrapped__)
    monkeypatch.setattr(layers, "compressed_wins", lambda *args: asked.append(args) or args[2] < 100)
    layer.set_mask(sparse_mask)
    assert layer.mode == "auto" and layer.path == "masked" and not asked
    report["cpp"] = dict(reference, devices=("cuda",))  # compiled, but not for this device
    layer.set_mask(sparse_mask)
    assert layer.path == "masked"
    report["cpp"] = reference
    layer.set_mask(sparse_mask)
    assert layer.path == "compressed" and asked[-1] == (10, 100, 50, torch.get_num_threads(), "cpu")
    layer.set_mask(torch.ones(10, 100, dtype=torch.bool))
    assert layer.path == "masked"
    layer.set_mask(sparse_mask)
    layer.attach_scores()
    assert layer.path == "masked"


def test_the_cost_model_favours_the_compressed_path_as_density_falls():
    for threads in (1, 2, 3):
        for out, inp in [(3072, 768), (512, 512), (4096, 4096)]:
            wins = [cost.compressed_wins(out, inp, round(d * out * inp), threads, "cpu")
                    for d in (0.001, 0.01, 0.05, 0.2, 0.5, 1.0)]
            assert wins == sorted(wins, reverse=True), (threads, out, inp, wins)  # one threshold per shape
            assert wins[0] and not wins[-1]


def test_the_conv_cost_model_takes_the_sparse_kernel_as_density_falls_and_batch_rows_grow():
    """VGG-19's 256 -> 256 convolution at 8 x 8 (CIFAR): one density threshold per batch, training at batch 32
    sparse at 2% and dense when dense, and batch-1 inference dense at 5% (the layout copies and the batch-wide
    vectors of the sparse kernel: measured 0.75 ms dense against 1.90 ms sparse)."""
    def wins(density, batch, training, threads=1):
        call = cost.ConvCall(batch, 256 * 64, 256 * 64, 256, 256 * 9, 64, round(density * 256 * 256 * 9), False)
        return cost.sparse_conv_wins(call, threads, training, "cpu")

    for threads in (1, 2):
        for training in (True, False):
            for batch in (1, 8, 32, 128):
                choice = [wins(d, batch, training, threads) for d in (0.001, 0.01, 0.05, 0.2, 0.5, 1.0)]
                assert choice == sorted(choice, reverse=True), (threads, training, batch, choice)
    assert wins(0.02, 32, True) and not wins(1.0, 32, True) and not wins(0.05, 1, False)
    assert not cost.sparse_conv_wins(cost.ConvCall(1, 16384, 16384, 256, 2304, 64, 100, False), 1, False, "cuda")



@pytest.mark.slow
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_matches_eager(backend, mode):
    masks = random_masks(net())
    eager = sparsify(net(), masks, mode=mode)
    compiled_model = sparsify(net(), masks, mode=mode)
    torch._dynamo.reset()
    compiled = torch.compile(compiled_model, backend=backend)
    x = inputs()
    y_eager, y = eager(x), compiled(x)
    torch.testing.assert_close(y, y_eager)
    y_eager.square().sum().backward()
    y.square().sum().backward()
    for p_eager, p in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(p.grad, p_eager.grad)
