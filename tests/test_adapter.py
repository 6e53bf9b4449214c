"""Models the project did not build, through every method: what panning.adapter selects, tied weights, output
objects, token inputs, attention (double backward, path counts), in-place activations, zero-initialized layers,
sparse forms of every prunable module, export, and a failed search. Tiny models only; values are checked against
an independent computation (finite differences, a path count by hand, the dense model with the mask applied)."""
from __future__ import annotations

import copy
import io
import types
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from panning import adapter, jackpot, prune
from panning.arena import Arena
from panning.connectivity import effective_masks, effective_sparsity
from panning.criteria import passes
from panning.criteria.functional import loss_grad
from panning.masks import Masks
from panning.nn import MaskedModule, SparseLayer, densify, sparsify
from panning.optional import require

METHODS = {"magnitude": {}, "random": {}, "snip": {"per_class": 2}, "grasp": {"per_class": 2},
           "synflow": {"iterations": 2}, "iterative_snip": {"iterations": 2, "per_class": 2},
           "force": {"iterations": 2, "per_class": 2}, "panning": {"iterations": 2, "per_class": 2}}


class TimmLinear(nn.Linear):
    """A subclass of Linear (as timm's)."""


class AttentionNet(nn.Module):
    """A tiny ViT-like block: patch projection, nn.MultiheadAttention, LayerNorm, a GELU MLP, a Linear subclass."""

    def __init__(self, dim: int = 8, classes: int = 3):
        super().__init__()
        self.embed = nn.Conv1d(2, dim, 2, stride=2)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = TimmLinear(dim, classes)

    def forward(self, x):
        h = self.embed(x).transpose(1, 2)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + self.mlp(self.norm(h))
        return self.head(h.mean(1))


class TokenNet(nn.Module):
    """Token ids -> embedding -> Linear, with the classifier tied to the embedding (as GPT-2's lm_head), returning
    an output object with `.logits` (as Hugging Face models do)."""

    def __init__(self, vocab: int = 6, dim: int = 4):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids):
        return types.SimpleNamespace(logits=self.lm_head(torch.relu(self.mix(self.wte(ids)))).mean(1))


def attention_data(n: int = 12) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 2, 8, generator=g), torch.arange(n) % 3)


def token_data(n: int = 12) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randint(0, 6, (n, 5), generator=g), torch.arange(n) % 6)


# -- what is selected --------------------------------------------------------------------------------------------


def test_default_selection_covers_subclasses_attention_and_ties_once():
    net = AttentionNet()
    names = [name for name, _ in adapter.selected(net)]
    assert names == ["embed.weight", "attn.in_proj_weight", "attn.out_proj.weight", "mlp.0.weight", "mlp.2.weight",
                     "head.weight"]
    tokens = TokenNet()
    assert [name for name, _ in adapter.selected(tokens)] == ["mix.weight", "lm_head.weight"]
    both = adapter.selected(tokens, adapter.with_embeddings)
    assert [name for name, _ in both] == ["wte.weight", "mix.weight"]  # the tied weight once, first name
    separate = nn.MultiheadAttention(4, 2, kdim=3, vdim=5)
    assert adapter.parameter_names(separate) == ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def test_logits_of_any_output():
    t = torch.ones(2, 3)
    assert adapter.logits(t) is t
    assert adapter.logits((t, 5)) is t and adapter.logits([t]) is t
    assert adapter.logits(types.SimpleNamespace(logits=t)) is t
    with pytest.raises(TypeError, match="logits=fn"):
        adapter.logits({"scores": t})


# -- every method on attention, tied weights, tokens, output objects --------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_attention_and_on_a_tied_token_model(method):
    torch.manual_seed(0)
    for net, data in ((AttentionNet(), attention_data()), (TokenNet(), token_data())):
        masks = prune(net, method, 0.5, data, **METHODS[method])
        assert masks.kept == round(Arena(net, share=False).numel * 0.5)
        Masks(masks).check(net)


def test_grasp_hessian_gradient_matches_finite_differences_through_attention():
    torch.manual_seed(0)
    net = AttentionNet().double()
    arena = Arena(net, share=False)
    x, y = attention_data().tensors
    batch = (x.double(), y)
    result = passes.gradient_pass(net, arena, batch, 1.0)  # the double backward (CPU attention has none)
    w = arena.weights.detach()
    g = loss_grad(net, arena, w, batch)[1]  # first derivatives only: finite differences of g along g give Hg
    eps = 1e-5
    hg = (loss_grad(net, arena, w + eps * g, batch)[1] - loss_grad(net, arena, w - eps * g, batch)[1]) / (2 * eps)
    torch.testing.assert_close(result.grasp, w * hg, rtol=1e-4, atol=1e-10)


def test_an_op_without_second_derivative_is_named_with_its_layer():
    net = nn.Sequential(nn.Linear(4, 6), nn.Hardsigmoid(), nn.Linear(6, 3))
    data = TensorDataset(torch.randn(9, 4), torch.arange(9) % 3)
    with pytest.raises(RuntimeError, match=r"layer '1' \(Hardsigmoid\) runs hardsigmoid.*second derivative"):
        prune(net, "grasp", 0.5, data, per_class=2)


@pytest.mark.parametrize("activation", [lambda: nn.ReLU(inplace=True), lambda: nn.Hardswish(inplace=True),
                                        lambda: nn.SiLU(inplace=True)])
def test_synflow_rescaling_survives_in_place_activations(activation):
    def net(make):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 8, 3), make(), nn.Conv2d(8, 8, 3), make(), nn.Flatten(),
                              nn.Linear(8 * 4 * 4, 3))
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(2.0 ** 20)  # outputs far out of float32's rescaling window: every layer rescales
        return model

    in_place = net(activation)
    plain = net(lambda: type(activation())())  # the same activation, not in place
    scores = [passes.flow(model, Arena(model, share=False), (2, 8, 8)).scores(torch.float32)
              for model in (in_place, plain)]
    assert torch.equal(scores[0], scores[1]) and bool(scores[0].gt(0).any())


def test_all_equal_scores_in_a_layer_warn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    nn.init.zeros_(net[2].weight)
    data = TensorDataset(torch.randn(9, 4), torch.arange(9) % 3)
    with pytest.warns(UserWarning, match=r"\['0.weight', '2.weight'\].*first weights in layer order"):
        prune(net, "snip", 0.5, data, per_class=2)  # zero head: no gradient reaches the first layer either
    nn.init.normal_(net[2].weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prune(net, "snip", 0.5, data, per_class=2)


# -- effective sparsity ----------------------------------------------------------------------------------------


def test_effective_sparsity_through_layernorm_and_hardsigmoid_matches_a_count_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Hardsigmoid(), nn.Linear(6, 4))
    dense = Masks.ones(Arena(net, share=False))
    assert effective_sparsity(net, dense, (5,)) == 0.0
    g = torch.Generator().manual_seed(3)
    first, second = torch.rand(6, 5, generator=g) < 0.3, torch.rand(4, 6, generator=g) < 0.3
    masks = Masks({"0.weight": first, "3.weight": second})
    effective = effective_masks(net, masks, (5,))
    # hidden unit j lies on a path iff it has a kept input weight and a kept output weight
    assert torch.equal(effective["0.weight"], first & second.any(0)[:, None])
    assert torch.equal(effective["3.weight"], second & first.any(1)[None, :])


def test_effective_sparsity_of_a_token_model_through_its_embedding():
    net = nn.Sequential(nn.Embedding(7, 5), nn.Flatten(), nn.Linear(15, 4))
    g = torch.Generator().manual_seed(1)
    emb, head = torch.rand(7, 5, generator=g) < 0.3, torch.rand(4, 15, generator=g) < 0.3
    masks = Masks({"0.weight": emb, "2.weight": head})
    effective = effective_masks(net, masks, (3,))
    reached = head.view(4, 3, 5).any(0).any(0)  # embedding dimension d reaches the output at some position
    fed = emb.any(0)  # some token feeds dimension d
    assert torch.equal(effective["0.weight"], emb & reached[None, :])
    assert torch.equal(effective["2.weight"], head & fed.repeat(3)[None, :])


def test_effective_sparsity_of_a_dense_attention_model_is_zero():
    net = AttentionNet()
    assert effective_sparsity(net, Masks.ones(Arena(net, share=False)), (2, 8)) == 0.0
    masks = dict(Masks.ones(Arena(net, share=False)))
    masks["attn.out_proj.weight"] = torch.zeros_like(masks["attn.out_proj.weight"])
    masks["mlp.2.weight"] = torch.zeros_like(masks["mlp.2.weight"])  # the residual still carries the input
    effective = effective_masks(net, masks, (2, 8))
    assert not effective["attn.in_proj_weight"].any() and effective["embed.weight"].all()


def test_a_head_without_query_weights_passes_no_path_through_its_keys_and_values():
    """Path counting replaces attention's softmax by relu (docs: connectivity): a head whose query projection is
    pruned scores 0 for every key, so its keys, values and output columns lie on no path (with softmax they would
    still carry a uniform average); the other head keeps all of its weights."""
    class AttentionOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True, bias=False)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0].mean(1)

    net = AttentionOnly()
    masks = dict(Masks.ones(Arena(net, share=False)))
    masks["attn.in_proj_weight"][0:4] = False  # head 0's query rows (rows 0-7 queries, 8-15 keys, 16-23 values)
    effective = effective_masks(net, masks, (4, 8))
    head0 = torch.zeros(24, dtype=torch.bool)
    head0[[*range(0, 4), *range(8, 12), *range(16, 20)]] = True
    assert torch.equal(effective["attn.in_proj_weight"].all(1), ~head0)
    assert not effective["attn.in_proj_weight"][head0].any()
    assert torch.equal(effective["attn.out_proj.weight"].any(0), torch.arange(8) >= 4)


# -- sparse forms, tied masks, export, search -------------------------------------------------------------------


def test_sparsify_masks_every_prunable_module_and_densify_restores_it():
    torch.manual_seed(0)
    net = AttentionNet()
    masks = prune(net, "random", 0.6)
    reference = copy.deepcopy(net)
    masks.apply(reference)
    plain_keys = sorted(reference.state_dict())
    sparsify(net, masks)
    assert isinstance(net.attn, nn.MultiheadAttention) and isinstance(net.attn, MaskedModule)
    assert isinstance(net.head, TimmLinear) and isinstance(net.attn.out_proj, nn.Linear)
    assert isinstance(net.mlp[0], SparseLayer)
    x = attention_data().tensors[0]
    torch.testing.assert_close(net(x), reference(x))
    assert Masks.from_model(net) == masks
    assert "attn.in_proj_weight_mask" in net.state_dict()
    exported = torch.export.export(net, (x,)).module()
    torch.testing.assert_close(exported(x), reference(x))
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), reference(x))
    torch.testing.assert_close(copy.deepcopy(net)(x), reference(x))
    densify(net)
    assert type(net.attn) is nn.MultiheadAttention and type(net.head) is TimmLinear
    assert sorted(net.state_dict()) == plain_keys
    torch.testing.assert_close(net(x), reference(x))


def test_masks_of_a_tied_weight_are_accepted_under_any_of_its_names():
    torch.manual_seed(0)
    net = TokenNet()
    masks = prune(net, "synflow", 0.5, input_shape=(5,), iterations=2)
    assert "lm_head.weight" in masks
    ids = token_data().tensors[0]
    reference = copy.deepcopy(net)
    masks.apply(reference)
    assert torch.equal(reference.wte.weight == 0, ~masks["lm_head.weight"])  # one mask, both places
    assert 0.0 <= effective_sparsity(net, masks, (5,)) < 1.0
    sparsify(net, masks)
    torch.testing.assert_close(net(ids).logits, reference(ids).logits)
    both = {**masks, "wte.weight": masks["lm_head.weight"]}
    with pytest.raises(ValueError, match="one tied parameter"):
        Masks(both).check(net)


def test_search_on_attention_and_a_failed_search_gives_the_model_back():
    torch.manual_seed(0)
    net = AttentionNet()
    data = attention_data(24)
    result = jackpot.search(net, data, sparsity=0.5, steps=2, batch_size=12, progress=False)
    assert "attn.in_proj_weight" in result.masks and isinstance(result.model.attn, MaskedModule)

    net = AttentionNet()
    net.attn.in_proj_bias.requires_grad_(False)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    calls = []

    def fails_in_the_second_step(output):  # the first step runs with the layers swapped, then the search fails
        calls.append(isinstance(net.attn, MaskedModule))
        if len(calls) == 2:
            raise RuntimeError("the second step fails")
        return output

    with pytest.raises(RuntimeError, match="^the second step fails$"):
        jackpot.search(net, data, sparsity=0.5, steps=2, batch_size=12, progress=False,
                       logits=fails_in_the_second_step)
    assert calls == [True, True]
    assert type(net.attn) is nn.MultiheadAttention and type(net.mlp[0]) is nn.Linear
    assert sorted(net.state_dict()) == sorted(state)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags


# -- models of other libraries ----------------------------------------------------------------------------------


def test_hugging_face_gpt2_and_bert_through_every_method():
    transformers = require("transformers", "the test")
    torch.manual_seed(0)
    gpt2 = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16, num_labels=3, pad_token_id=0))
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=50,
        max_position_embeddings=16, num_labels=3))
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(1, 50, (9, 8), generator=g), torch.arange(9) % 3)
    for model in (gpt2.eval(), bert.eval()):
        names = [name for name, _ in adapter.selected(model)]
        if model is gpt2:
            assert "transformer.h.0.attn.c_attn.weight" in names  # Hugging Face's Conv1D
        for method in ("snip", "grasp", "synflow", "panning"):
            masks = prune(model, method, 0.5, data, **METHODS[method])
            assert masks.kept == round(sum(masks[n].numel() for n in masks) * 0.5)
        assert effective_sparsity(model, Masks({n: torch.ones_like(m) for n, m in masks.items()}), (8,)) == 0.0
        reference = copy.deepcopy(model)
        masks.apply(reference)
        sparsify(model, masks)
        ids = data.tensors[0]
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_gpt2_language_model_with_a_tied_head_and_a_logits_function():
    transformers = require("transformers", "the test")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=20,
                                                                 n_positions=8)).eval()
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 20, (10, 6), generator=g), torch.arange(10) % 5)
    masks = prune(model, "panning", 0.5, data, logits=lambda out: out.logits[:, -1], iterations=2, per_class=2)
    assert "lm_head.weight" in masks
    sparsify(model, masks)
    assert torch.equal(model.transformer.wte.weight == 0, ~masks["lm_head.weight"])


def test_timm_models_with_tiny_inputs():
    timm = require("timm", "the test")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(6, 3, 32, 32, generator=g), torch.arange(6) % 3)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                            num_classes=3)
    mobilenet = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=3)
    for model in (vit, mobilenet):
        for method in ("snip", "synflow"):
            prune(model, method, 0.5, data, **METHODS[method])
    dense = Masks({n: torch.ones_like(p, dtype=torch.bool) for n, p in adapter.selected(vit)})
    assert effective_sparsity(vit, dense, (3, 32, 32)) == 0.0
    vit.eval()
    masks = prune(vit, "magnitude", 0.5)
    reference = copy.deepcopy(vit)
    masks.apply(reference)
    sparsify(vit, masks)
    x = data.tensors[0]
    torch.testing.assert_close(torch.export.export(vit, (x,)).module()(x), reference(x))  # the head reads x[:, 0]
    masks = prune(mobilenet, "snip", 0.5, data, per_class=2)
    reference = copy.deepcopy(mobilenet).eval()
    masks.apply(reference)
    sparsify(mobilenet, masks).eval()
    torch.testing.assert_close(mobilenet(data.tensors[0]), reference(data.tensors[0]))



class DictOutput(nn.Module):
    """A model whose output holds its class scores under a key of its own."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return {"scores": self.fc(x)}


def test_a_logits_function_serves_prune_search_and_train():
    from panning.data import DataBundle
    from panning.train import train

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(12, 4, generator=g), torch.arange(12) % 3)
    scores = lambda out: out["scores"]  # noqa: E731
    with pytest.raises(TypeError, match="logits=fn"):
        prune(DictOutput(), "snip", 0.5, data, per_class=2)
    with pytest.raises(TypeError, match="logits: expected a function"):
        prune(DictOutput(), "snip", 0.5, data, per_class=2, logits="scores")
    masks = prune(DictOutput(), "panning", 0.5, data, logits=scores, iterations=2, per_class=2)
    result = jackpot.search(DictOutput(), data, sparsity=0.5, steps=1, batch_size=12, include_classifier=True,
                            test=data, logits=scores, progress=False)
    assert 0.0 <= result.history[-1].test_acc <= 1.0
    bundle = DataBundle("dict", data, data, (4,), 3)
    net = DictOutput()
    outcome = train(net, bundle, epochs=1, batch_size=6, masks=masks, logits=scores, progress=False)
    assert outcome.history[-1].train_loss > 0
    assert bool((net.fc.weight[~masks["fc.weight"]] == 0).all())
