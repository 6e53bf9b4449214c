"""The compressed weight of a fixed-mask layer (CSR over output rows)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SparseWeight:
    """A (out_features, in_features) weight that keeps only the masked-in entries.

    `values` holds the kept weights in row-major (CSR) order and is the only trainable part: a layer
    stores it as its parameter and `sparse_linear` sends the weight gradient to it. The index arrays
    are int64 so that more than 2^31 kept entries are addressable.
    """

    shape: tuple[int, int]
    crow_indices: torch.Tensor  # (out + 1,) int64: row r holds entries crow[r]:crow[r+1]
    col_indices: torch.Tensor  # (nnz,) int64, increasing within a row
    values: torch.Tensor  # (nnz,)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, mask: torch.Tensor) -> "SparseWeight":
        rows, cols = mask.nonzero(as_tuple=True)
        counts = torch.bincount(rows, minlength=weight.shape[0])
        crow = torch.zeros(weight.shape[0] + 1, dtype=torch.int64, device=weight.device)
        torch.cumsum(counts, 0, out=crow[1:])
        return cls((weight.shape[0], weight.shape[1]), crow, cols, weight[rows, cols].contiguous())

    @property
    def nnz(self) -> int:
        return self.col_indices.numel()

    @property
    def density(self) -> float:
        size = self.shape[0] * self.shape[1]
        return self.nnz / size if size else 0.0

    def row_indices(self) -> torch.Tensor:
        """The row of every kept entry, in CSR order."""
        counts = self.crow_indices.diff()
        rows = torch.arange(self.shape[0], device=counts.device)
        return torch.repeat_interleave(rows, counts, output_size=self.nnz)

    def mask(self) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=torch.bool, device=self.values.device)
        out[self.row_indices(), self.col_indices] = True
        return out

    def to_dense(self) -> torch.Tensor:
        """The full weight with zeros at the pruned positions (differentiable in `values`)."""
        flat = self.values.new_zeros(self.shape[0] * self.shape[1])
        flat = flat.index_put((self.row_indices() * self.shape[1] + self.col_indices,), self.values)
        return flat.view(self.shape)

    def with_values(self, values: torch.Tensor) -> "SparseWeight":
        """The same structure carrying other values (e.g. a trainable parameter)."""
        if values.shape != self.values.shape:
            raise ValueError(f"values: expected shape {tuple(self.values.shape)}, got {tuple(values.shape)}")
        return SparseWeight(self.shape, self.crow_indices, self.col_indices, values)
