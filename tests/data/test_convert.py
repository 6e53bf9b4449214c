"""panning.data.as_tensors / split, and every entry point taking a Dataset or a DataLoader as it takes tensors."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import panning
from panning import data, models
from panning.train import evaluate, train


class Items(Dataset):
    """A map-style dataset of (tensor, int) items, as a user writes one: item i is computed, not stored."""

    def __init__(self, n: int = 24, classes: int = 3, shape=(1, 6, 6)):
        self.n, self.classes, self.shape = n, classes, shape

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return torch.randn(self.shape, generator=g), i % self.classes


def stacked(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The expected tensors, item by item."""
    return (torch.stack([dataset[i][0] for i in range(len(dataset))]),
            torch.tensor([dataset[i][1] for i in range(len(dataset))]))


def net(seed: int = 0):
    torch.manual_seed(seed)
    return models.build("cnn2d", (1, 6, 6), 3, width=0.125)


def test_a_tensor_dataset_with_int64_labels_is_used_as_it_is():
    tensors = TensorDataset(torch.randn(5, 2), torch.arange(5))
    assert data.as_tensors(tensors) is tensors
    narrow = data.as_tensors(TensorDataset(torch.randn(5, 2), torch.arange(5, dtype=torch.int32)))
    assert narrow.tensors[1].dtype == torch.int64 and narrow.tensors[1].tolist() == list(range(5))


def test_a_dataset_and_a_loader_become_the_items_in_order():
    items = Items(n=600)  # more than one read batch
    x, y = stacked(items)
    got = data.as_tensors(items).tensors
    assert torch.equal(got[0], x) and torch.equal(got[1], y) and got[1].dtype == torch.int64
    loaded = data.as_tensors(DataLoader(items, batch_size=7)).tensors
    assert torch.equal(loaded[0], x) and torch.equal(loaded[1], y)
    dropped = data.as_tensors(DataLoader(items, batch_size=7, drop_last=True)).tensors  # the loader's batches
    assert torch.equal(dropped[0], x[:595])


def test_integer_inputs_keep_their_dtype():
    tokens = TensorDataset(torch.randint(0, 50, (6, 5)), torch.arange(6) % 2)
    x, _ = data.as_tensors(DataLoader(tokens, batch_size=4)).tensors
    assert x.dtype == torch.int64 and torch.equal(x, tokens.tensors[0])


@pytest.mark.parametrize("bad, error, message", [
    ([(torch.zeros(2), 0)], TypeError, "train_set: expected a torch Dataset of .* got list"),
    (TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64)), ValueError,
     "train_set: expected inputs \\(at least one\\) .*, got an empty dataset$"),
    (TensorDataset(torch.zeros(2, 2), torch.tensor([0.0, 1.0])), ValueError, "one integer class index .* per input"),
    (TensorDataset(torch.zeros(2, 2), torch.zeros(2, 3, dtype=torch.int64)), ValueError, "labels of .* shape"),
    (TensorDataset(torch.zeros(2, 2), torch.tensor([0, -1])), ValueError, "class index \\(>= 0\\) .* the smallest -1"),
    (DataLoader([("text", 0), ("more", 1)], batch_size=2), TypeError, "could not be batched into \\(input, label\\) "
     "tensors \\(a batch of list\\)"),
    (DataLoader([{"x": torch.zeros(2), "y": 0}], batch_size=1), TypeError, "could not be batched .*a batch of dict"),
    (DataLoader([(torch.zeros(2), 0), (torch.zeros(3), 1)], batch_size=2), TypeError,
     "^train_set: expected a torch Dataset .*, got items that could not be batched"),
])
def test_bad_data_is_one_error_naming_the_argument(bad, error, message):
    with pytest.raises(error, match=message):
        data.as_tensors(bad, "train_set")


def test_split_keeps_a_bundle_and_names_other_data():
    bundle = data.load("synthetic", num_classes=3, input_shape=(1, 6, 6), n_train=30, n_test=9)
    assert data.split(bundle) == (bundle.train, bundle.test, bundle.augment, bundle.name)
    other = TensorDataset(torch.randn(4, 1, 6, 6), torch.arange(4) % 3)
    assert data.split(bundle, other).test is other
    own = data.split(Items(), DataLoader(Items(n=6)))
    assert (own.name, own.augment, len(own.train), len(own.test)) == ("tensors", None, 24, 6)
    with pytest.raises(TypeError, match="data: expected a torch Dataset .* got dict$"):
        data.split({"x": 1})
    with pytest.raises(TypeError, match=r"test: expected a torch Dataset .* got DataBundle \(give bundle.train"):
        data.split(bundle, bundle)


def test_prune_takes_a_dataset_or_a_loader_as_it_takes_tensors():
    items = Items()
    tensors = TensorDataset(*stacked(items))
    expected = panning.prune(net(), "snip", 0.8, tensors, per_class=2, seed=3)
    assert panning.prune(net(), "snip", 0.8, items, per_class=2, seed=3) == expected
    assert panning.prune(net(), "snip", 0.8, DataLoader(items, batch_size=5), per_class=2, seed=3) == expected
    with pytest.raises(ValueError, match="^data: expected inputs .*, got an empty dataset$"):
        panning.prune(net(), "snip", 0.8, Items(n=0))


def test_train_and_evaluate_take_a_dataset_or_a_loader_as_they_take_tensors():
    items = Items()
    tensors = TensorDataset(*stacked(items))
    runs = []
    for train_data, test_data in ((tensors, tensors), (items, DataLoader(items, batch_size=5))):
        model = net()
        result = train(model, train_data, test=test_data, epochs=2, batch_size=8, lr=0.05, progress=False)
        runs.append((model.state_dict(), result.test_loss))
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0]) and runs[0][1] == runs[1][1]
    model = net()
    alone = train(model, DataLoader(items, batch_size=5), epochs=1, batch_size=8, progress=False)
    assert math.isnan(alone.test_loss) and math.isnan(alone.test_acc) and math.isfinite(alone.history[0].train_loss)
    assert evaluate(model, DataLoader(items, batch_size=5)) == evaluate(model, tensors)
    bundle = data.bundle_of(tensors, items)
    assert evaluate(model, bundle) == evaluate(model, tensors)  # a bundle: its test split


def test_search_takes_a_dataset_or_a_loader_as_it_takes_tensors():
    items = Items()
    tensors = TensorDataset(*stacked(items))
    results = [panning.jackpot.search(net(), train_data, test=test_data, sparsity=0.5, steps=3, batch_size=8,
                                      progress=False)
               for train_data, test_data in ((tensors, tensors), (DataLoader(items, batch_size=5), items))]
    assert results[0].masks == results[1].masks
    assert results[0].history[-1].test_loss == results[1].history[-1].test_loss
