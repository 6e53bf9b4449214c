"""The one conversion of a user's data for every entry point that takes data (``panning.prune``,
``panning.jackpot.search``, ``panning.train.train`` and ``evaluate``): a :class:`DataBundle`, a ``Dataset`` of
``(input, label)`` items or a ``DataLoader`` of ``(inputs, labels)`` batches becomes tensors in memory, read once.

The library's loops draw batches by indexing those tensors on the model's device (a seeded order per epoch,
class-balanced draws, resumable positions), which is why the data is read into memory rather than streamed.
Inputs keep their dtype (float images, integer token ids); labels become int64 class indices.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .bundle import Augment, DataBundle

#: What the entry points accept as data.
Data = DataBundle | Dataset | DataLoader
#: Items read at once from a Dataset that is not a TensorDataset.
READ_BATCH = 256


class Split(NamedTuple):
    """Data as the loops use it: training and test tensors (test None when there is none), the bundle's augment
    (None for other data) and a name for progress bars and checkpoints ("tensors" for data not from a bundle)."""

    train: TensorDataset
    test: TensorDataset | None
    augment: Augment | None
    name: str


def as_tensors(data: Dataset | DataLoader, argument: str = "data") -> TensorDataset:
    """``data`` as a TensorDataset of (inputs, int64 labels).

    A TensorDataset of two tensors with int64 labels is returned as it is (no copy); any other Dataset is read in
    order through a DataLoader (batches of :data:`READ_BATCH`, torch's default collation); a DataLoader is read
    once, batch by batch, in the order it yields (its shuffling, sampler and ``drop_last`` apply). Errors name
    ``argument``.
    """
    tensors = getattr(data, "tensors", None)
    if isinstance(data, TensorDataset) and len(tensors) == 2:
        read = tensors
    elif isinstance(data, (Dataset, DataLoader)):
        read = _read(data if isinstance(data, DataLoader) else DataLoader(data, batch_size=READ_BATCH))
    else:
        read = f"{type(data).__name__}{' (give bundle.train or bundle.test)' if isinstance(data, DataBundle) else ''}"
    if isinstance(read, str):  # what `data` is or yields instead of (input, label) tensors
        raise TypeError(f"{argument}: expected a torch Dataset of (input, label) items or a DataLoader of (inputs, "
                        f"labels) batches, got {read}")
    x, y = read
    indices = len(y) > 0 and not (y.dtype == torch.bool or y.is_floating_point() or y.is_complex()) and y.dim() == 1
    if not indices or len(x) != len(y) or int(y.min()) < 0:
        smallest = f", the smallest {int(y.min())}" if indices else ""
        got = "an empty dataset" if len(y) == 0 else (f"labels of dtype {y.dtype} and shape {tuple(y.shape)}{smallest} "
                                                      f"for inputs of shape {tuple(x.shape)}")
        raise ValueError(f"{argument}: expected inputs (at least one) with one integer class index (>= 0) per input, "
                         f"got {got}")
    return data if isinstance(data, TensorDataset) and y.dtype == torch.int64 else TensorDataset(x, y.long())


def _read(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor] | str:
    """The inputs and labels `loader` yields, or what it yields instead of (input, label) tensors."""
    inputs, labels = [], []
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
            cause = f"a batch of {type(batch).__name__}"
        except StopIteration:
            break
        except (TypeError, RuntimeError) as error:  # default_collate on items it cannot batch (e.g. PIL images)
            batch, cause = None, " ".join(str(error).split())
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(map(torch.is_tensor, batch))):
            return (f"items that could not be batched into (input, label) tensors ({cause}); give inputs as "
                    "tensors, e.g. with a transform ending in ToTensor()")
        inputs.append(batch[0])
        labels.append(batch[1])
    if not inputs:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    return torch.cat(inputs), torch.cat(labels)


def split(data: Data, test: Dataset | DataLoader | None = None, *, argument: str = "data",
          test_argument: str = "test") -> Split:
    """The training and test tensors of ``data`` (a DataBundle's splits, or ``data`` itself for training) and of
    ``test`` (given: it replaces a bundle's test split)."""
    if isinstance(data, DataBundle):
        train, given, augment, name = data.train, data.test, data.augment, data.name
    else:
        train, given, augment, name = as_tensors(data, argument), None, None, "tensors"
    return Split(train, given if test is None else as_tensors(test, test_argument), augment, name)
