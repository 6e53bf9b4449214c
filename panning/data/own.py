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
    x, y = as_tensors(train, "train").tensors
    if test is not None:
        x_test, y_test = as_tensors(test, "test").tensors
    else:
        if len(y) < 2:
            raise ValueError(f"train: {len(y)} sample(s) cannot be split into training and test data; give test")
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        cut = len(y) - max(1, round(HELD_OUT * len(y)))
        x, y, x_test, y_test = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    x, x_test = (t.float() if t.is_floating_point() else t for t in (x, x_test))
    return DataBundle(name=name, train=TensorDataset(x, y), test=TensorDataset(x_test, y_test),
                      input_shape=tuple(x.shape[1:]), num_classes=int(max(y.max(), y_test.max())) + 1)


def load_tensor_file(path: str | os.PathLike, *, seed: int = 0, name: str = "path") -> DataBundle:
    """The data of a tensor file (safetensors, or a torch file read with weights_only) holding ``x`` (inputs,
    one per row) and ``y`` (class indices), and optionally ``x_test`` and ``y_test``; without them a seeded
    :data:`HELD_OUT` of the data is the test split. Errors start with `name`."""
    tensors = load_tensors(path, name=name)
    held = tensors if isinstance(tensors, dict) else {}
    with_test = "x_test" in held or "y_test" in held
    if not _pair(held.get("x"), held.get("y")) or (with_test and not _pair(held.get("x_test"), held.get("y_test"))):
        holds = ({key: tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                  for key, value in held.items()} if isinstance(tensors, dict) else type(tensors).__name__)
        cause = (f"must hold tensors 'x' and 'y' of one length (and optionally 'x_test' and 'y_test', of one "
                 f"length); it holds {holds}")
    else:
        test = TensorDataset(tensors["x_test"], tensors["y_test"]) if with_test else None
        try:
            return bundle_of(TensorDataset(tensors["x"], tensors["y"]), test, name=Path(path).stem, seed=seed)
        except (TypeError, ValueError) as error:  # the data's own check (as_tensors, DataBundle)
            cause = str(error)
    raise ValueError(f"{name}: {os.fspath(path)!r}: {cause}")


def _pair(x, y) -> bool:
    """Whether `x` and `y` are tensors of one length (an input per label)."""
    return torch.is_tensor(x) and torch.is_tensor(y) and min(x.dim(), y.dim()) > 0 and len(x) == len(y)


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
        return torchvision.datasets.ImageFolder(os.fspath(path), transform=transform)

    train = next((root / s for s in TRAIN_FOLDERS if (root / s).is_dir()), None)
    test = next((root / s for s in TEST_FOLDERS if (root / s).is_dir()), None)
    try:  # OSError: no class folders, no images, an unreadable image; TypeError: images of different sizes
        parts = (folder(train), folder(test)) if train is not None and test is not None else (folder(root), None)
        if parts[1] is None or parts[0].classes == parts[1].classes:
            return bundle_of(*parts, name=root.name, seed=seed)
        cause = f"{str(train)!r} and {str(test)!r} hold different classes ({parts[0].classes} and {parts[1].classes})"
    except (OSError, TypeError) as error:
        hint = "; give image_size to resize the images to one size" if isinstance(error, TypeError) else ""
        cause = f"{' '.join(str(error).split())}{hint}"
    raise ValueError(f"{name}: {cause}")
