"""The one source of class-balanced batches for every data-dependent pruning method."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..criteria import Batch
from ..data import class_balanced_batch


class Batches:
    """`batches(step)` is the class-balanced batch (`per_class` samples of every class) of a pruning step,
    drawn from `dataset` with `generator` and moved to `device`.

    Fresh (default): one new batch per step; asking again for the step just drawn returns the same batch,
    so every index of a step sees one batch. Cached (`cached=B`): only B batches are ever drawn and step e
    uses batch e mod B, as the RL agent's episodes do.
    """

    def __init__(self, dataset: Dataset, per_class: int, generator: torch.Generator | None,
                 device: torch.device, *, cached: int | None = None):
        self.dataset, self.per_class, self.generator, self.device = dataset, per_class, generator, device
        self.cached = cached
        self._drawn: dict[int, Batch] = {}
        class_balanced_batch(dataset, per_class, generator=torch.Generator())  # fail now on a bad per_class

    def key(self, step: int) -> int:
        """The key under which step's batch (and anything computed from it) is kept."""
        return step % self.cached if self.cached else step

    def __call__(self, step: int) -> Batch:
        key = self.key(step)
        if key not in self._drawn:
            if not self.cached:
                self._drawn.clear()  # fresh batches: keep only the current step's
            x, y = class_balanced_batch(self.dataset, self.per_class, generator=self.generator)
            self._drawn[key] = (x.to(self.device), y.to(self.device))
        return self._drawn[key]
