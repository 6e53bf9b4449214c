"""MNIST-1D (Greydanus & Steinbach), generated locally with the ``mnist1d`` package; never downloaded.

The standard data set (``get_dataset_args()``, its fixed seed 42) has 4000 train and 1000 test sequences of
40 features in 10 classes. Generation takes about two seconds, so the arrays are cached per process.
"""
from __future__ import annotations

import functools
import random

import numpy as np

from .bundle import DataBundle, tensor_dataset


@functools.lru_cache(maxsize=1)
def _generate() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds Python's and numpy's global generators; put the caller's states back.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = (d["x"], d["y"], d["x_test"], d["y_test"])
    for a in arrays:
        a.setflags(write=False)
    return arrays


def load_mnist1d() -> DataBundle:
    """The standard MNIST-1D split as (N, 1, 40) float32 sequences, so 1-D conv nets take them directly."""
    x, y, x_test, y_test = _generate()
    return DataBundle(
        name="mnist1d",
        train=tensor_dataset(x[:, None, :], y),
        test=tensor_dataset(x_test[:, None, :], y_test),
        input_shape=(1, x.shape[1]),
        num_classes=10,
    )
