"""Tiny CIFAR folders in the dataset authors' python-pickle format, for the reader's and the recipes' tests."""
import pickle

import numpy as np

#: data set -> (folder, file names, label key, number of classes), as the authors distribute them.
LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train", "test"], b"fine_labels", 100),
}


def write_cifar(folder, files, label_key, num_classes, n=12, seed=0):
    """Write tiny batches in the authors' pickle format (bytes keys, uint8 (N, 3072) data, list labels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in files:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            label_key: [int(v) for v in rng.integers(0, num_classes, size=n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
