"""Masks: equality, measures, model and checkpoint views, files in both formats, export."""
from __future__ import annotations

import datetime

import pytest
import torch
from torch import nn

from panning import ops
from panning.arena import Arena
from panning.masks import Masks
from panning.nn import sparsify


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 7), nn.ReLU(),
                         nn.Linear(7, 4))


def random_masks(net: nn.Module, keep: float = 0.4, seed: int = 1) -> Masks:
    arena = Arena(net, share=False)
    return Masks.from_flat(arena, torch.rand(arena.numel, generator=torch.Generator().manual_seed(seed)) < keep)


def test_equality_compares_names_and_bits():
    masks = random_masks(model())
    assert masks == Masks(dict(masks)) and masks == dict(masks)
    flipped = dict(masks)
    flipped["3.weight"] = masks["3.weight"].clone()
    flipped["3.weight"][0, 0] ^= True
    assert masks != flipped
    assert masks != {k: v for k, v in masks.items() if k != "0.weight"}
    assert masks != {**masks, "5.weight": masks["5.weight"].reshape(-1)}


def test_measures():
    masks = Masks({"a": torch.tensor([True, False, False, False]), "b": torch.tensor([[True, True], [True, False]])})
    assert masks.sparsity == pytest.approx(4 / 8)
    assert masks.layer_sparsity() == pytest.approx({"a": 0.75, "b": 0.25})
    other = Masks({"a": torch.tensor([True, True, False, False]), "b": torch.tensor([[True, False], [False, True]])})
    assert masks.overlap(other) == pytest.approx(2 / 6)  # kept in both: a0, b00; in either: 6


def test_flat_round_trip_overlap_extremes_and_refusals():
    net = model()
    arena = Arena(net, share=False)
    flat = torch.rand(arena.numel, generator=torch.Generator().manual_seed(1)) > 0.7
    masks = Masks.from_flat(arena, flat)
    assert masks.kept == int(flat.sum()) and masks.numel == arena.numel
    assert masks.sparsity == pytest.approx(1 - flat.float().mean().item())
    assert torch.equal(masks.to_flat(arena), flat)
    flat[0] ^= True  # from_flat copied: later writes to the buffer do not leak in
    assert masks.to_flat(arena)[0] != flat[0]
    assert masks.overlap(masks) == 1.0 and masks.overlap({n: ~m for n, m in masks.items()}) == 0.0
    with pytest.raises(ValueError, match=r"^other: masks of .* do not cover the same parameters with the same shapes"):
        masks.overlap({n: m[:1] for n, m in masks.items()})  # would broadcast
    with pytest.raises(ValueError, match="masks: no parameter named"):
        Masks({"nope.weight": torch.ones(2, dtype=torch.bool)}).apply(net)
    with pytest.raises(TypeError, match=r"^masks: expected a mapping of parameter names to bool tensors, got entry "
                                        r"'0.weight' of torch.float32$"):
        Masks({"0.weight": torch.ones(3, 2, 3)})


def test_from_model_and_from_state_dict():
    net = model()
    masks = random_masks(net)
    assert len(Masks.from_model(net)) == 0
    sparse = sparsify(net, masks)
    assert Masks.from_model(sparse) == masks
    assert Masks.from_state_dict(sparse.state_dict()) == masks


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".masks"])
def test_save_and_load_are_identical_in_both_formats(tmp_path, suffix):
    masks = random_masks(model())
    path = tmp_path / f"m{suffix}"
    masks.save(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert path.read_bytes().startswith(b"PK") == (suffix == ".pt")
    loaded = Masks.load(path)
    assert loaded == masks and list(loaded) == list(masks)
    if suffix == ".pt":  # an ordinary torch file that torch loads safely, with the format marker beside the masks
        plain = torch.load(path, weights_only=True)
        assert plain.pop("format") == "panning.masks/1" and plain.pop("about") == "{}" and Masks(plain) == masks


def test_loading_something_else_fails_clearly(tmp_path):
    (tmp_path / "junk").write_bytes(b"not a mask file at all")
    with pytest.raises(ValueError, match="path: .*junk.* is neither a torch file nor a readable safetensors file"):
        Masks.load(tmp_path / "junk")
    torch.save([torch.ones(2, dtype=torch.bool)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a mapping"):
        Masks.load(tmp_path / "list.pt")
    torch.save({"w": datetime.date(2026, 11, 21)}, tmp_path / "code.pt")  # weights_only refuses arbitrary objects
    with pytest.raises(ValueError, match="code.pt.* is not a safe checkpoint"):
        Masks.load(tmp_path / "code.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "float.pt")
    with pytest.raises(ValueError, match=r"^--masks: '.*float.pt' holds 'w', which is not a mask \(a bool tensor\)$"):
        Masks.load(tmp_path / "float.pt", name="--masks")


def test_apply_and_baked():
    net = model()
    masks = random_masks(net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    baked = masks.baked(net)
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())  # baked() changes nothing
    masks.apply(net)
    for name, param in net.named_parameters():
        assert torch.equal(param, baked.get(name, before[name]))


def test_export_gives_compressed_weights_of_the_masked_model():
    net = model()
    masks = random_masks(net)
    exported = masks.export(net)
    baked = masks.baked(net)
    assert set(exported) == set(masks)
    for name, sparse_weight in exported.items():
        assert isinstance(sparse_weight, ops.SparseWeight) and sparse_weight.nnz == int(masks[name].sum())
        torch.testing.assert_close(sparse_weight.to_dense(), baked[name].reshape(baked[name].shape[0], -1))
    x = torch.randn(5, 18)
    torch.testing.assert_close(ops.sparse_linear(x, exported["3.weight"], net[3].bias),
                               x @ baked["3.weight"].t() + net[3].bias)


def test_masks_files_carry_a_format_marker_and_what_they_were_made_for(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    masks = Masks(random_masks(model()), {"model": "mlp", "width": 0.5, "data": "synthetic"})
    masks.save(tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == "panning.masks/1"
    loaded = Masks.load(tmp_path / "m.safetensors")
    assert loaded == masks and loaded.about == {"model": "mlp", "width": 0.5, "data": "synthetic"}
    plain = {name: m.contiguous() for name, m in masks.items()}
    save_file(plain, str(tmp_path / "unmarked.safetensors"))  # written before files were marked: still read
    assert Masks.load(tmp_path / "unmarked.safetensors") == masks
    save_file(plain, str(tmp_path / "v9.safetensors"), metadata={"format": "panning.masks/9"})
    with pytest.raises(ValueError,
                       match=r"v9.safetensors' is 'panning.masks/9', not panning masks \(panning.masks/1\)"):
        Masks.load(tmp_path / "v9.safetensors")
    save_file({}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(ValueError, match=r"empty.safetensors' holds no masks$"):
        Masks.load(tmp_path / "empty.safetensors")


def test_masks_that_keep_nothing_are_refused_before_the_model_changes():
    net = model()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    zero = Masks({name: torch.zeros_like(m) for name, m in random_masks(net).items()})
    with pytest.raises(ValueError, match=r"^masks: keep none of the [\d,]+ weights they cover \(sparsity 1"):
        zero.apply(net)
    assert all(torch.equal(p, before[name]) for name, p in net.named_parameters())
