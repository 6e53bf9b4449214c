"""panning.models: every model's output shape on its input, narrow CIFAR variants, layer types, errors."""
import pytest
import torch
from torch import nn

import panning.models as models

SHAPES = {
    "mlp": (1, 40),
    "cnn1d": (1, 40),
    "cnn2d": (1, 8, 8),
    "vgg19_bn": (3, 32, 32),
    "resnet32": (3, 32, 32),
}
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def test_available_lists_every_model():
    assert set(models.available()) == set(SHAPES)


@pytest.mark.parametrize("name", list(SHAPES))
def test_forward_shape_narrow(name):
    torch.manual_seed(0)
    model = models.build(name, SHAPES[name], 7, width=0.125)
    assert model(torch.randn(3, *SHAPES[name])).shape == (3, 7)


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "cnn2d"])
def test_forward_shape_full_width(name):
    model = models.build(name, SHAPES[name], 10)
    assert model(torch.randn(2, *SHAPES[name])).shape == (2, 10)


def test_paper_architectures():
    vgg = models.build("vgg19_bn", (3, 32, 32), 10)
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128] + [256] * 4 + [512] * 8
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vgg.modules()) == 16
    assert [type(m) for m in vgg.modules() if isinstance(m, nn.Linear)] == [nn.Linear]  # one classifier
    resnet = models.build("resnet32", (3, 32, 32), 100)
    convs = [m for m in resnet.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 31  # 1 stem + 3 stages x 5 blocks x 2 (+ the linear head makes 32 layers)
    assert {c.out_channels for c in convs} == {32, 64, 128}
    assert resnet(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    cnn = models.build("cnn1d", (1, 40), 10)
    assert [(c.out_channels, c.stride) for c in cnn.modules() if isinstance(c, nn.Conv1d)] == [(25, (2,))] * 3


def test_width_scales_parameters():
    wide = sum(p.numel() for p in models.build("resnet32", (3, 32, 32), 10).parameters())
    narrow = sum(p.numel() for p in models.build("resnet32", (3, 32, 32), 10, width=0.5).parameters())
    assert 3.5 < wide / narrow < 4.1


@pytest.mark.parametrize("name", list(SHAPES))
def test_weights_live_in_plain_layers_with_kaiming_init(name):
    torch.manual_seed(0)
    model = models.build(name, SHAPES[name], 10)
    for module_name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if own:
            assert isinstance(module, PRUNABLE + (nn.BatchNorm1d, nn.BatchNorm2d)), module_name
    first = next(m for m in model.modules() if isinstance(m, PRUNABLE))
    fan_in = first.weight[0].numel()
    assert first.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.35)


def test_same_seed_same_model():
    torch.manual_seed(3)
    a = models.build("cnn2d", (1, 8, 8), 10)
    torch.manual_seed(3)
    b = models.build("cnn2d", (1, 8, 8), 10)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="name: expected one of .*resnet32"):
        models.build("resnet50", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="input_shape for 'cnn1d' must be"):
        models.build("cnn1d", (40,), 10)
    with pytest.raises(ValueError, match="input_shape for 'vgg19_bn'"):
        models.build("vgg19_bn", (3, 32), 10)
    with pytest.raises(ValueError, match=r"width: expected a number in \(0, inf\]"):
        models.build("mlp", (4,), 10, width=0)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("mlp", (4,), 0)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = models.build("cnn2d", (1, 8, 8), 10, width=0.5)
    path = tmp_path / "m.safetensors"
    models.save(path, model, name="cnn2d", input_shape=(1, 8, 8), num_classes=10, width=0.5, data="digits")
    loaded, spec = models.load(path)
    assert spec == dict(name="cnn2d", input_shape=[1, 8, 8], num_classes=10, width=0.5, data="digits")
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="path: .* is not a model saved by panning"):
        models.load(tmp_path / "other.safetensors")
