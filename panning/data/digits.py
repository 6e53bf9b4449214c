"""scikit-learn's embedded 8x8 handwritten digits (1797 images, 10 classes), split 1437/360 by seed."""
from __future__ import annotations

import numpy as np

from .bundle import DataBundle, tensor_dataset

TEST_SIZE = 360


def load_digits(seed: int = 0) -> DataBundle:
    """Pixels scaled to [0, 1] as (N, 1, 8, 8); the split is stratified by class and fixed by ``seed``."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    raw = sk_load_digits()
    x = (raw.data / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, raw.target, test_size=TEST_SIZE, stratify=raw.target, random_state=seed
    )
    return DataBundle(
        name="digits",
        train=tensor_dataset(x_train, y_train),
        test=tensor_dataset(x_test, y_test),
        input_shape=(1, 8, 8),
        num_classes=10,
    )
