"""A user's own data as a :class:`DataBundle`: any Dataset or DataLoader (through :func:`as_tensors`), a tensor file
with ``x`` and ``y``, or a folder of images in class folders (torchvision's ImageFolder layout).

Without a test split, a seeded fifth of the data is held out as one (:data:`HELD_OUT`), so that every command and
loop that reports test accuracy works on any data.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .. import checks
from ..io import load_tensors
from ..optional import require
from .bundle import DataBundle
from .convert import as_tensors

#: The fraction of the data held out as the test split where none is given.
HELD_OUT = 0.2
#: Sub-folders an image folder may split its data into, for training and for testing.
TRAIN_FOLDERS, TEST_FOLDERS = ("train",), ("test", "val")


def bundle_of(train: Dataset | DataLoader, test: Dataset | DataLoader | None = None, *, name: str = "own",
              seed: int = 0) -> DataBundle:
    """A DataBundle of `train` and `test` (each a Dataset or DataLoader, read once into memory). Without `test`,
    a random :data:`HELD_OUT` of `train`, drawn with `seed`, becomes the test split. The class count is the
    largest label + 1; inputs are float32 (images, signals) or int64 (token ids)."""
    checks.non_negative_int("seed", seed)
    x, y = as_tensors(train, "train").tensors
    if test is not None:
        x_test, y_test = as_tensors(test, "test").tensors
    else:
        if len(y) < 2:
            raise ValueError(f"train: {len(y)} sample(s) cannot be split into training and test data; give test")
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        cut = len(y) - max(1, round(HELD_OUT * len(y)))
        x, y, x_test, y_test = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    if x.shape[1:] != x_test.shape[1:] or x.dtype != x_test.dtype:
        raise ValueError(f"test: inputs of shape {tuple(x_test.shape[1:])} ({x_test.dtype}) do not match the "
                         f"training inputs' {tuple(x.shape[1:])} ({x.dtype})")
    if x.is_floating_point():
        x, x_test = x.float(), x_test.float()
    return DataBundle(name=name, train=TensorDataset(x, y), test=TensorDataset(x_test, y_test),
                      input_shape=tuple(x.shape[1:]), num_classes=int(max(y.max(), y_test.max())) + 1)


def load_tensor_file(path: str | os.PathLike, *, seed: int = 0, name: str = "path") -> DataBundle:
    """The data of a tensor file (safetensors, or a torch file read with weights_only) holding ``x`` (inputs,
    one per row) and ``y`` (class indices), and optionally ``x_test`` and ``y_test``; without them a seeded
    :data:`HELD_OUT` of the data is the test split. Errors start with `name`."""
    tensors = load_tensors(path, name=name)
    if not isinstance(tensors, dict) or not {"x", "y"} <= tensors.keys():
        keys = sorted(tensors) if isinstance(tensors, dict) else type(tensors).__name__
        raise ValueError(f"{name}: {os.fspath(path)!r} must hold tensors 'x' and 'y' (and optionally 'x_test' "
                         f"and 'y_test'); it holds {keys}")
    if ("x_test" in tensors) != ("y_test" in tensors):
        raise ValueError(f"{name}: {os.fspath(path)!r} holds only one of 'x_test' and 'y_test'")
    for split in ("", "_test"):
        x, y = tensors.get("x" + split), tensors.get("y" + split)
        if x is not None and len(x) != len(y):
            raise ValueError(f"{name}: {os.fspath(path)!r}: 'x{split}' and 'y{split}' differ in length "
                             f"({len(x)} and {len(y)})")
    test = TensorDataset(tensors["x_test"], tensors["y_test"]) if "x_test" in tensors else None
    try:
        return bundle_of(TensorDataset(tensors["x"], tensors["y"]), test, name=Path(path).stem, seed=seed)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: {os.fspath(path)!r}: {error}") from None


def load_image_folder(root: str | os.PathLike, *, image_size: int | None = None, seed: int = 0,
                      name: str = "root") -> DataBundle:
    """Images in class folders (torchvision's ImageFolder: ``root/<class>/<image>``), as float tensors in [0, 1].
    A ``train/`` sub-folder with ``test/`` (or ``val/``) beside it gives both splits; otherwise a seeded
    :data:`HELD_OUT` of `root` is the test split. `image_size` resizes every image to a square of that side
    (images of different sizes need it). Needs torchvision."""
    torchvision = require("torchvision", "an image folder")
    from torchvision import transforms

    root = Path(root)
    steps = ([transforms.Resize((image_size, image_size))] if image_size is not None else [])
    transform = transforms.Compose([*steps, transforms.ToTensor()])

    def folder(path: Path):
        try:
            return torchvision.datasets.ImageFolder(os.fspath(path), transform=transform)
        except (FileNotFoundError, OSError) as error:
            raise ValueError(f"{name}: {' '.join(str(error).split())}") from None

    train = next((root / s for s in TRAIN_FOLDERS if (root / s).is_dir()), None)
    test = next((root / s for s in TEST_FOLDERS if (root / s).is_dir()), None)
    if train is not None and test is not None:
        parts = folder(train), folder(test)
        if parts[0].classes != parts[1].classes:
            raise ValueError(f"{name}: {str(train)!r} and {str(test)!r} hold different classes "
                             f"({parts[0].classes} and {parts[1].classes})")
    else:
        parts = folder(root), None
    try:
        return bundle_of(*parts, name=root.name, seed=seed)
    except TypeError as error:
        raise ValueError(f"{name}: {error}; give image_size to resize the images to one size") from None
