"""The container every data source returns: train/test tensors plus what a model needs to know about them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

#: A batch transform for training data: (x, generator) -> x of the same shape. It draws all of its randomness
#: from the generator so that training stays reproducible (and resumable) for a seed.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A classification data set split into train and test.

    ``train`` and ``test`` hold inputs of shape ``(N, *input_shape)``, float32 (or int64 token ids for a
    language model), and int64 labels in ``[0, num_classes)``. ``augment`` (optional) is applied by the trainer
    to training batches only.
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]
    num_classes: int
    augment: Augment | None = None

    def __post_init__(self) -> None:
        dtype = self.train.tensors[0].dtype  # the test inputs' too
        for split in ("train", "test"):
            x, y = getattr(self, split).tensors
            if (x.dtype not in (torch.float32, torch.int64) or x.dtype != dtype or y.dtype != torch.int64
                    or tuple(x.shape[1:]) != tuple(self.input_shape)):
                expected = "float32 (or int64)" if split == "train" else f"{dtype} (as in train)"
                raise ValueError(f"{split}: expected {expected} inputs of shape {tuple(self.input_shape)} and int64 "
                                 f"labels, got {x.dtype} inputs of shape {tuple(x.shape[1:])} and {y.dtype} labels")

    def __repr__(self) -> str:
        return (
            f"DataBundle(name={self.name!r}, train={len(self.train)}, test={len(self.test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


def _tensor(a, dtype: np.dtype) -> torch.Tensor:
    a = np.asarray(a, dtype=dtype)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def tensor_dataset(x, y) -> TensorDataset:
    """A TensorDataset of float32 inputs and int64 labels from array-likes; copies only where it must
    (a dtype change, or a read-only array such as a cached one)."""
    return TensorDataset(_tensor(x, np.float32), _tensor(y, np.int64))
