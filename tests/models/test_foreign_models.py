"""Models of other libraries, tiny and randomly initialized (nothing is downloaded), through every part of panning:
each pruning method, sparsify + one training step + densify, masks saved and loaded, a short jackpot search, and
torch.compile and torch.export of the sparse model.

torchvision, timm and transformers are test dependencies (pyproject's models extra; scripts/bootstrap.sh installs the
torchvision made for the installed torch) and are imported through panning.optional, which also imports
torchvision beside a CPU-only torch. The models keep the named architecture's module types (residual blocks,
depthwise convolutions, squeeze-excitation, attention, embeddings), made small where their constructors allow it
(torchvision's resnet18 and efficientnet_b0 cannot be narrowed: they get 16x16 images instead).

Each cell (case, what) either runs through, or ends in a deliberate refusal of panning that it asserts (REFUSED),
or is not run because it fails today for a reason written beside it (PENDING; docs/models.md, "What works").
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import panning
from panning.masks import Masks
from panning.nn import SparseLayer
from panning.optional import require
from panning.pbt import METHODS as ALL_METHODS
from panning.sparsity import keep_count

CLASSES = 4
SPARSITY = 0.5
#: The shortest settings of every method (two steps, one sample per class).
FAST = {"iterations": 2, "per_class": 1}


def images(size: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(2 * CLASSES, 3, size, size, generator=g), torch.arange(2 * CLASSES) % CLASSES)


def tokens(vocabulary: int = 64, length: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randint(1, vocabulary, (2 * CLASSES, length), generator=g),
                         torch.arange(2 * CLASSES) % CLASSES)


def torchvision_model(name: str, **options) -> Callable[[], nn.Module]:
    return lambda: require("torchvision", "the test").models.get_model(name, weights=None, num_classes=CLASSES,
                                                                        **options)


def torchvision_vit() -> nn.Module:
    models = require("torchvision", "the test").models
    return models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                    mlp_dim=32, num_classes=CLASSES)


def timm_model(name: str, **options) -> Callable[[], nn.Module]:
    return lambda: require("timm", "the test").create_model(name, pretrained=False, num_classes=CLASSES, **options)


def bert() -> nn.Module:
    transformers = require("transformers", "the test")
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=CLASSES)
    return transformers.BertForSequenceClassification(config)


def gpt2() -> nn.Module:
    transformers = require("transformers", "the test")
    config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=16,
                                     num_labels=CLASSES, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                                     use_cache=False)
    return transformers.GPT2ForSequenceClassification(config)


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    data: Callable[[], TensorDataset]


CASES = {
    "torchvision-resnet18": Case(torchvision_model("resnet18"), lambda: images(16)),
    "torchvision-mobilenet_v3_small": Case(torchvision_model("mobilenet_v3_small", width_mult=0.25), images),
    "torchvision-efficientnet_b0": Case(torchvision_model("efficientnet_b0"), lambda: images(16)),
    "torchvision-vit": Case(torchvision_vit, images),
    "timm-resnet18": Case(timm_model("resnet18", channels=(8, 16, 32, 64), stem_width=8), images),
    "timm-vit": Case(timm_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=16, depth=2,
                                num_heads=2), images),
    "transformers-bert": Case(bert, tokens),
    "transformers-gpt2": Case(gpt2, tokens),
}
METHODS = [m for m in ALL_METHODS if m != "rl_panning"]  # rl_panning needs an agent trained per network

#: Cells (case, what) that end in a deliberate one-line refusal of panning: they assert that error, whole.
REFUSED: dict[tuple[str, str], tuple[type, str]] = {
    # MobileNetV3's squeeze-excitation gate: torch has no second derivative of hardsigmoid (docs/adapter.md)
    **{("torchvision-mobilenet_v3_small", f"prune {m}"): (RuntimeError, "^" + re.escape(
        "model: layer 'features.1.block.1.scale_activation' (Hardsigmoid) runs hardsigmoid, whose second derivative "
        "torch does not implement; GraSP and Panning need one (a double backward): replace that op, or use a "
        "method without it (snip, synflow, magnitude)") + "$")
       for m in ("grasp", "panning")},
}
#: Cells (case, what) not run: they fail today, and not by a deliberate refusal (each with its reason).
PENDING: dict[tuple[str, str], str] = {}


def cells(what: str | Callable[[str], str], *more: list) -> list:
    """pytest parameters (case, *more) of every case whose cell `what` (a name, or a function of the extra
    parameters) is not pending."""
    name_of = what if callable(what) else (lambda *_: what)
    return [pytest.param(case, *extra, id="-".join([case, *map(str, extra)]))
            for case, *extra in itertools.product(CASES, *more)
            if (case, name_of(*extra)) not in PENDING]


def outcome(case: str, what: str):
    """The refusal expected of the cell, as a context manager (nothing expected where it runs through)."""
    refused = REFUSED.get((case, what))
    return pytest.raises(refused[0], match=refused[1]) if refused else contextlib.nullcontext()


def test_refused_and_pending_cells_name_real_cells():
    whats = {*(f"prune {m}" for m in METHODS), "train", "jackpot", "compile", "export auto", "export masked",
             "export compressed"}
    for case, what in [*REFUSED, *PENDING]:
        assert case in CASES and what in whats, (case, what)
    assert not REFUSED.keys() & PENDING.keys()


@pytest.fixture(scope="module")
def built() -> Callable[[str], tuple[nn.Module, TensorDataset]]:
    """Each case's model (seeded) and data, built once; the tests work on copies."""
    cache = {}

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = (CASES[name].build().eval(), CASES[name].data())
        model, data = cache[name]
        return copy.deepcopy(model), data
    return get


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def logits(output) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.logits


@pytest.mark.parametrize("name, method", cells(lambda method: f"prune {method}", METHODS))
def test_every_method_prunes_exactly_and_leaves_the_model_alone(built, name, method):
    model, data = built(name)
    before = state(model)
    options = {k: v for k, v in FAST.items() if k in ALL_METHODS[method].defaults}
    with outcome(name, f"prune {method}"):
        masks = panning.prune(model, method, SPARSITY, data, **options)
        assert masks.kept == keep_count(masks.numel, SPARSITY)
        assert all(masks[n].shape == p.shape for n, p in masks.check(model).items())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", cells("train"))
def test_sparse_training_keeps_pruned_weights_zero_and_densify_gives_the_original_layout(built, name, tmp_path):
    model, data = built(name)
    original = state(model)
    masks = panning.prune(model, "magnitude", SPARSITY)
    masks.save(tmp_path / "masks.safetensors")
    assert Masks.load(tmp_path / "masks.safetensors") == masks
    with outcome(name, "train"):
        panning.sparsify(model, masks)
        panning.train.train(model, data, epochs=1, batch_size=len(data), lr=0.1, progress=False)  # one step
        trained = panning.densify(model).state_dict()
        assert trained.keys() == original.keys()
        assert all(trained[k].shape == original[k].shape for k in original)
        for k, mask in masks.items():
            assert not trained[k][~mask].any(), k
        assert any(not torch.equal(trained[k][mask], original[k][mask]) for k, mask in masks.items())


@pytest.mark.parametrize("name", cells("jackpot"))
def test_jackpot_search_keeps_weights_and_exact_budgets(built, name):
    model, data = built(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with outcome(name, "jackpot"):
        result = panning.jackpot.search(model, data, sparsity=SPARSITY, steps=2, batch_size=len(data),
                                        progress=False)
        assert {n: int(m.sum()) for n, m in result.masks.items()} == result.budgets
        assert sum(result.budgets.values()) == keep_count(result.masks.numel, SPARSITY)
        searched = dict(result.model.named_parameters())
        assert all(torch.equal(searched[n], p) for n, p in before.items())  # the weights, pruned ones included
        plain = dict(panning.densify(result.model).named_parameters())
        for n, p in before.items():
            expected = p.masked_fill(~result.masks[n], 0) if n in result.masks else p
            assert torch.equal(plain[n], expected), n


def sparse(built, name: str, mode: str = "auto"):
    """The case's model pruned by magnitude and sparsified, and two of its inputs."""
    model, data = built(name)
    return panning.sparsify(model, panning.prune(model, "magnitude", SPARSITY), mode=mode), data.tensors[0][:2]


@pytest.mark.parametrize("name", cells("compile"))
def test_sparse_model_compiles(built, name):
    with outcome(name, "compile"):
        model, x = sparse(built, name)
        torch._dynamo.reset()
        with torch.no_grad():
            torch.testing.assert_close(logits(torch.compile(model, backend="aot_eager")(x)), logits(model(x)))


@pytest.mark.parametrize("name, mode", cells(lambda mode: f"export {mode}", ["auto", "masked", "compressed"]))
def test_sparse_model_exports(built, name, mode):
    """Mode "compressed" puts the sparse layers of panning.nn on the compressed path, whose layout's size depends on
    the mask: the exported graph takes the masked path instead."""
    with outcome(name, f"export {mode}"):
        model, x = sparse(built, name, mode)
        if mode == "compressed":
            assert any(layer.path == "compressed" for layer in model.modules() if isinstance(layer, SparseLayer))
        with torch.no_grad():
            exported = torch.export.export(model, (x,)).module()
            torch.testing.assert_close(logits(exported(x)), logits(model(x)))
