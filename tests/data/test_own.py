"""panning.data.bundle_of, load_tensor_file and load_image_folder: one's own data as a DataBundle."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

from panning import data


def tensors(n: int = 10, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, 3, generator=g), torch.arange(n) % classes


def test_bundle_of_holds_out_a_seeded_fifth_without_test_data():
    x, y = tensors(10)
    bundle = data.bundle_of(DataLoader(TensorDataset(x, y), batch_size=4), name="mine", seed=1)
    assert (bundle.name, len(bundle.train), len(bundle.test), bundle.input_shape, bundle.num_classes) == (
        "mine", 8, 2, (2, 3), 3)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))  # the documented draw
    assert torch.equal(bundle.test.tensors[0], x[order[8:]]) and torch.equal(bundle.train.tensors[1], y[order[:8]])
    again = data.bundle_of(TensorDataset(x, y), seed=1)
    assert torch.equal(again.test.tensors[0], bundle.test.tensors[0])


def test_bundle_of_keeps_a_given_test_split_and_token_ids():
    tokens = TensorDataset(torch.randint(0, 9, (6, 4)), torch.tensor([0, 1, 0, 1, 0, 1]))
    test = TensorDataset(torch.randint(0, 9, (2, 4)), torch.tensor([4, 0]))
    bundle = data.bundle_of(tokens, test)
    assert bundle.train.tensors[0].dtype == torch.int64 and bundle.num_classes == 5 and len(bundle.test) == 2
    with pytest.raises(ValueError, match=r"test: expected torch.int64 \(as in train\) inputs of shape \(4,\) .* got "
                                         r"torch.int64 inputs of shape \(5,\)"):
        data.bundle_of(tokens, TensorDataset(torch.zeros(2, 5, dtype=torch.int64), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match=r"test: expected torch.int64 \(as in train\) inputs .* got torch.float32 "):
        data.bundle_of(tokens, TensorDataset(torch.zeros(2, 4), torch.tensor([0, 1])))  # not token ids
    with pytest.raises(ValueError, match="train: 1 sample"):
        data.bundle_of(TensorDataset(torch.zeros(1, 2), torch.tensor([0])))


def test_a_tensor_file_with_and_without_its_test_split(tmp_path):
    x, y = tensors(10)
    save_file({"x": x, "y": y}, tmp_path / "mine.safetensors")
    bundle = data.load_tensor_file(tmp_path / "mine.safetensors")
    assert (bundle.name, len(bundle.train), len(bundle.test)) == ("mine", 8, 2)
    torch.save({"x": x, "y": y, "x_test": x[:3], "y_test": y[:3]}, tmp_path / "split.pt")
    split = data.load_tensor_file(tmp_path / "split.pt")
    assert torch.equal(split.train.tensors[0], x) and torch.equal(split.test.tensors[1], y[:3])


@pytest.mark.parametrize("content, message", [
    ({"inputs": torch.zeros(2, 1)}, "must hold tensors 'x' and 'y' .* it holds {'inputs': \\(2, 1\\)}"),
    ({"x": torch.zeros(2, 1), "y": torch.tensor([0, 1]), "x_test": torch.zeros(1, 1)}, "'x_test': \\(1, 1\\)}$"),
    ({"x": torch.zeros(3, 1), "y": torch.tensor([0, 1])}, "of one length .* {'x': \\(3, 1\\), 'y': \\(2,\\)}"),
    ({"x": torch.zeros(2, 1), "y": torch.tensor([0.5, 1.0])}, "one integer class index .* per input"),
])
def test_a_tensor_file_that_does_not_fit_is_named(tmp_path, content, message):
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=f"--data: .*bad.pt.*{message}"):
        data.load_tensor_file(tmp_path / "bad.pt", name="--data")


def write_images(folder, sizes=(6,)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (folder / c).mkdir(parents=True)
        for i in range(4):
            size = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / c / f"{i}.png")


def test_an_image_folder_with_its_splits_reads_every_image_as_floats(tmp_path):
    from PIL import Image

    write_images(tmp_path / "train")
    write_images(tmp_path / "test")
    bundle = data.load_image_folder(tmp_path)
    assert (len(bundle.train), len(bundle.test), bundle.input_shape, bundle.num_classes) == (8, 8, (3, 6, 6), 2)
    first = np.asarray(Image.open(tmp_path / "train" / "cat" / "0.png"), dtype=np.float32) / 255
    assert torch.allclose(bundle.train.tensors[0][0], torch.from_numpy(first).permute(2, 0, 1))
    assert bundle.train.tensors[1].tolist() == [0] * 4 + [1] * 4
    (tmp_path / "test" / "dog").rename(tmp_path / "test" / "bird")  # label 1 would mean another class in test
    with pytest.raises(ValueError, match=r"^root: '.*train' and '.*test' hold different classes \(\['cat', 'dog'\] "
                                         r"and \['bird', 'cat'\]\)$"):
        data.load_image_folder(tmp_path)


def test_an_image_folder_of_mixed_sizes_needs_image_size(tmp_path):
    write_images(tmp_path, sizes=(6, 7))
    with pytest.raises(ValueError, match="root: .*could not be batched.*give image_size"):
        data.load_image_folder(tmp_path)
    bundle = data.load_image_folder(tmp_path, image_size=5, seed=0)
    assert bundle.input_shape == (3, 5, 5) and (len(bundle.train), len(bundle.test)) == (6, 2)
