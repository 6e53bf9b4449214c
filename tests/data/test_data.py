"""panning.data: shapes, dtypes, determinism, the CIFAR pickle reader, class-balanced draws, augmentation."""
import pickle
import re

import numpy as np
import pytest
import torch

import panning.data as data
from panning.data.augment import crop_flip

from ..cifar_folder import LAYOUTS, write_cifar


@pytest.mark.slow
def test_mnist1d_shapes_and_cache():
    bundle = data.load("mnist1d")
    x, y = bundle.train.tensors
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((4000, 1, 40), torch.float32, (4000,), torch.int64)
    assert bundle.test.tensors[0].shape == (1000, 1, 40)
    assert (bundle.input_shape, bundle.num_classes) == ((1, 40), 10)
    assert set(y.tolist()) == set(range(10))
    again = data.load("mnist1d", seed=5)  # the standard data set, whatever the seed
    assert torch.equal(again.train.tensors[0], x)
    assert again.train.tensors[0].data_ptr() != x.data_ptr()  # bundles do not share storage


def test_mnist1d_leaves_global_rngs_alone(monkeypatch):
    import random

    import mnist1d.data

    from panning.data import mnist1d as source

    def fake_make_dataset(args):  # reseeds the global generators, as the real one does
        random.seed(args.seed)
        np.random.seed(args.seed)
        return {k: np.zeros((2, 40) if k.startswith("x") else 2) for k in ("x", "y", "x_test", "y_test")}

    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset)
    random.seed(1)
    np.random.seed(1)
    expected = (random.random(), np.random.rand())
    random.seed(1)
    np.random.seed(1)
    source._generate.__wrapped__()  # uncached
    assert (random.random(), np.random.rand()) == expected


def test_digits_split_is_stratified_and_seeded():
    a, b, c = data.load("digits", seed=0), data.load("digits", seed=0), data.load("digits", seed=1)
    assert (len(a.train), len(a.test), a.input_shape, a.num_classes) == (1437, 360, (1, 8, 8), 10)
    x = a.train.tensors[0]
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])
    counts = torch.bincount(a.test.tensors[1])
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 36 per class, +-1


def test_synthetic_is_configurable_and_deterministic():
    a = data.load("synthetic", seed=3, num_classes=3, input_shape=(2, 5), n_train=30, n_test=12)
    b = data.load("synthetic", seed=3, num_classes=3, input_shape=(2, 5), n_train=30, n_test=12)
    assert a.train.tensors[0].shape == (30, 2, 5) and a.input_shape == (2, 5) and a.num_classes == 3
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.bincount(a.train.tensors[1]).tolist() == [10, 10, 10]
    assert not torch.equal(a.train.tensors[0], data.load("synthetic", seed=4, input_shape=(2, 5)).train.tensors[0][:30])


def test_unknown_name_and_options():
    with pytest.raises(ValueError, match="name: expected one of .*mnist1d.*cifar10"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="^n_train: digits would ignore n_train: .* only synthetic takes options"):
        data.load("digits", n_train=3)
    with pytest.raises(ValueError, match="^data_dir: synthetic would ignore data_dir: only the CIFAR data sets"):
        data.load("synthetic", data_dir=".")


@pytest.mark.parametrize("name, folder, files, label_key, num_classes", [(k, *v) for k, v in LAYOUTS.items()])
def test_cifar_reads_pickle_folder(tmp_path, name, folder, files, label_key, num_classes):
    write_cifar(tmp_path / folder, files, label_key, num_classes)
    bundle = data.load(name, data_dir=tmp_path)  # the parent
    same = data.load(name, data_dir=str(tmp_path / folder))  # the folder itself
    n_train = 12 * (len(files) - 1)
    x, y = bundle.train.tensors
    assert (x.shape, x.dtype, y.dtype) == ((n_train, 3, 32, 32), torch.float32, torch.int64)
    assert (len(bundle.test), bundle.input_shape, bundle.num_classes) == (12, (3, 32, 32), num_classes)
    assert torch.equal(x, same.train.tensors[0])
    # pixel (0, 0) of channel 0 of the first image, normalized with the standard mean/std
    with open(tmp_path / folder / files[0], "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    mean, std = (0.4914, 0.2470) if name == "cifar10" else (0.5071, 0.2673)
    assert x[0, 0, 0, 0].item() == pytest.approx((raw[b"data"][0, 0] / 255 - mean) / std, abs=1e-5)
    assert y[:12].tolist() == raw[label_key]
    assert bundle.augment is not None


def test_cifar_errors_name_data_dir(tmp_path):
    with pytest.raises(ValueError, match="data_dir: required"):
        data.load("cifar10")
    with pytest.raises(ValueError, match=f"data_dir: {re.escape(repr(str(tmp_path)))} holds neither"):
        data.load("cifar100", data_dir=tmp_path)


def test_a_cifar_folder_with_a_missing_or_foreign_batch_is_named_as_data_dir(tmp_path):
    folder, files, label_key, num_classes = LAYOUTS["cifar10"]
    write_cifar(tmp_path / folder, files, label_key, num_classes)
    (tmp_path / folder / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"^data_dir: .*cifar-10-batches-py lacks data_batch_3$"):
        data.load("cifar10", data_dir=tmp_path)
    with open(tmp_path / folder / "data_batch_3", "wb") as f:  # CIFAR-100's labels in a CIFAR-10 batch
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), label_key: [3, 99]}, f)
    with pytest.raises(ValueError, match=r"^data_dir: .*data_batch_3 is not a CIFAR batch: .* in \[0, 10\), got data "
                                         r"\(2, 3072\) and labels \(2,\) in \[3, 99\]$"):
        data.load("cifar10", data_dir=tmp_path)
    with open(tmp_path / folder / "data_batch_3", "wb") as f:
        pickle.dump({b"pixels": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(ValueError, match=r"is not a CIFAR batch: .*, got keys \[b'pixels'\]$"):
        data.load("cifar10", data_dir=tmp_path)


def test_cifar_reader_refuses_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": print, b"fine_labels": []}, f)  # a global outside the allow-list
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.load("cifar100", data_dir=folder)


def test_class_balanced_batch_exact_counts_and_reproducible():
    bundle = data.load("synthetic", num_classes=5, n_train=53)
    x, y = data.class_balanced_batch(bundle.train, 7, generator=torch.Generator().manual_seed(1))
    assert x.shape == (35, 1, 16) and torch.bincount(y).tolist() == [7] * 5
    # rows really are samples of the labelled class, all distinct within the batch
    train_x, train_y = bundle.train.tensors
    rows = [int(torch.nonzero((train_x == xi).all(dim=(1, 2)))[0]) for xi in x]
    assert len(set(rows)) == 35 and train_y[rows].tolist() == y.tolist()
    x2, _ = data.class_balanced_batch(bundle.train, 7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)
    x3, _ = data.class_balanced_batch(bundle.train, 7, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(x, x3)


def test_class_balanced_takes_whole_class_and_errors():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    idx = data.class_balanced_indices(labels, 1)
    assert labels[idx].tolist() == [0, 1, 2]
    for bad in (2, 0, True):
        with pytest.raises(ValueError, match=rf"^per_class: expected an int in \[1, 1\] \(the samples of the smallest "
                                             rf"class, 0\), got {bad}"):
            data.class_balanced_indices(labels, bad)
    with pytest.raises(TypeError, match="has no len"):  # a bundle, not its train split: Python's own error, at once
        data.class_balanced_batch(data.load("synthetic"), 1)


def test_class_balanced_on_a_generic_dataset():
    items = [(torch.full((2,), float(i)), i % 3) for i in range(9)]
    x, y = data.class_balanced_batch(items, 3)
    assert torch.bincount(y).tolist() == [3, 3, 3] and sorted(x[:, 0].tolist()) == list(map(float, range(9)))


def test_crop_flip_matches_per_image_reference():
    x = torch.randn(6, 3, 5, 7)
    out = crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    g = torch.Generator().manual_seed(0)
    shifts = torch.randint(0, 5, (2, 6), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        crop = padded[i, :, shifts[0, i] : shifts[0, i] + 5, shifts[1, i] : shifts[1, i] + 7]
        assert torch.equal(out[i], crop.flip(2) if flips[i] else crop)
