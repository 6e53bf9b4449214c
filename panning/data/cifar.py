"""CIFAR-10 / CIFAR-100 read from the standard python-pickle folders a user already has; never downloaded.

Layouts (as distributed by the dataset's authors):
  cifar-10-batches-py/  data_batch_1 .. data_batch_5, test_batch   (b"data": uint8 (N, 3072), b"labels")
  cifar-100-python/     train, test                                (b"data", b"fine_labels")
``data_dir`` may name the folder itself or its parent. The pickles are read with an unpickler that only
accepts the few numpy globals these files need, so a tampered file cannot execute code.
"""
from __future__ import annotations

import codecs
import importlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError
from .augment import crop_flip
from .bundle import DataBundle, tensor_dataset


@dataclass(frozen=True)
class _Layout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_LAYOUTS = {
    "cifar10": _Layout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        label_key=b"labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _Layout(
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        label_key=b"fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

def _numpy_reconstruct():
    try:  # numpy >= 2 moved numpy.core to numpy._core; pickles name either
        return importlib.import_module("numpy._core.multiarray")._reconstruct
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")._reconstruct


_RECONSTRUCT = _numpy_reconstruct()
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file") from None


def _read_batch(path: Path, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[layout.label_key], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        data = labels = None
    if (data is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),)
            or (labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes))):
        if data is None:
            got = f"keys {sorted(batch)}" if isinstance(batch, dict) else f"a {type(batch).__name__}"
        else:
            got = f"data {data.shape} and labels {labels.shape}" + (
                f" in [{labels.min()}, {labels.max()}]" if labels.size else "")
        raise ConfigError("data_dir", f"{path} is not a CIFAR batch: expected b'data' (N, 3072) and N "
                                      f"{layout.label_key!r} in [0, {layout.num_classes}), got {got}")
    return data, labels


def _find_folder(data_dir, layout: _Layout, name: str) -> Path:
    """The folder of `layout`'s files: `data_dir` itself or its sub-folder of the layout's name."""
    root = None if data_dir is None else Path(os.fspath(data_dir)).expanduser()
    candidates = () if root is None else (root, root / layout.folder)
    folder = next((c for c in candidates if (c / layout.test_file).is_file()), None)
    missing = [f for f in layout.train_files if folder is None or not (folder / f).is_file()]
    if missing:
        if root is None:
            reason = (f"required for {name!r}: pass the folder {layout.folder!r} or its parent (CIFAR is never "
                      "downloaded)")
        elif folder is None:
            reason = f"{str(root)!r} holds neither {layout.folder}/{layout.test_file} nor {layout.test_file}"
        else:
            reason = f"{folder} lacks {', '.join(missing)}"
        raise ConfigError("data_dir", reason)
    return folder


def _normalize(data: np.ndarray, layout: _Layout) -> np.ndarray:
    x = data.reshape(-1, 3, 32, 32).astype(np.float32)  # in place from here on: CIFAR-10 train is 600 MB
    x /= 255.0
    x -= np.asarray(layout.mean, dtype=np.float32)[None, :, None, None]
    x /= np.asarray(layout.std, dtype=np.float32)[None, :, None, None]
    return x


def load_cifar(name: str, data_dir) -> DataBundle:
    """CIFAR-10 or CIFAR-100 (``name``) as normalized (N, 3, 32, 32) float32, with crop+flip augmentation."""
    layout = _LAYOUTS[name]
    folder = _find_folder(data_dir, layout, name)
    parts = [_read_batch(folder / f, layout) for f in layout.train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_batch(folder / layout.test_file, layout)
    return DataBundle(
        name=name,
        train=tensor_dataset(_normalize(x_train, layout), y_train),
        test=tensor_dataset(_normalize(x_test, layout), y_test),
        input_shape=(3, 32, 32),
        num_classes=layout.num_classes,
        augment=crop_flip,
    )
