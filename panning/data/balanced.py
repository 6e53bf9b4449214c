"""Class-balanced draws: exactly ``per_class`` samples of every class, as data-dependent pruning criteria
(SNIP, GraSP, Panning's per-step batches) expect."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..config import ConfigError


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The int64 labels of a dataset: the second tensor of a TensorDataset, else read item by item."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) >= 2:
        return tensors[1].to(device="cpu", dtype=torch.int64)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)


def class_balanced_indices(
    labels: torch.Tensor, per_class: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``per_class`` samples of every class present in ``labels``, drawn without replacement within
    a class, grouped by class in ascending label order (so ``labels[result]`` is sorted)."""
    labels = torch.as_tensor(labels).cpu()
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D tensor, got shape {tuple(labels.shape)}")
    # One random permutation, then a stable sort by label: each class's run is a uniform random order of it.
    perm = torch.randperm(labels.numel(), generator=generator)
    by_class = perm[torch.sort(labels[perm], stable=True).indices]
    classes, counts = torch.unique_consecutive(labels[by_class], return_counts=True)
    smallest = int(counts.min())
    if not (isinstance(per_class, int) and not isinstance(per_class, bool) and 1 <= per_class <= smallest):
        raise ConfigError("per_class", f"expected an int in [1, {smallest}] (the samples of the smallest class, "
                                       f"{classes[counts.argmin()].item()}), got {per_class!r}")
    starts = torch.cumsum(counts, 0) - counts
    picks = (starts[:, None] + torch.arange(per_class)).reshape(-1)
    return by_class[picks]


def class_balanced_batch(
    dataset: Dataset, per_class: int, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch ``(x, y)`` with exactly ``per_class`` samples of every class in ``dataset``, grouped by class.

    Raises ValueError naming ``per_class`` if some class has fewer samples. Pass a seeded ``generator`` for a
    reproducible draw; successive calls with the same generator give fresh batches.
    """
    index = class_balanced_indices(labels_of(dataset), per_class, generator=generator)
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return tensors[0][index], tensors[1][index]
    items = [dataset[i] for i in index.tolist()]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])
