"""The compressed weight of a fixed-mask layer (CSR over output rows), validated when it is built.

The kernels index x and the output with the row pointers and column indices, so a bad structure would make
them read or write out of bounds. The constructor therefore checks the whole structure once (O(out + nnz)):
dtypes, lengths, devices, row pointers from 0 to nnz and non-decreasing, columns in [0, in) and strictly
increasing within a row. The result is remembered per (crow, col) tensor pair together with both tensors'
version counters, so rebuilding a SparseWeight around the same index tensors (a layer does it at every
forward) costs O(1), while an in-place write into them is noticed and checked again.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, fields

import torch
from torch.utils.weak import WeakIdKeyDictionary

from . import checks as tensor_checks

# crow tensor -> (weak reference to its col tensor, crow version, col version, shape) of a checked structure.
_CHECKED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _check_shape(shape) -> tuple[int, int]:
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise ValueError(f"shape: expected (out_features, in_features), two non-negative ints, got {shape!r}")
    return int(shape[0]), int(shape[1])


def _check_tensors(crow, col, values) -> None:
    """The index tensors 1-D int64 (a float or int32 index would be misread by the kernels), the values one floating
    value per column index, all three on one device."""
    for name, index in (("crow_indices", crow), ("col_indices", col)):
        if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.dtype != torch.int64:
            got = f"{index.dtype} of shape {tuple(index.shape)}" if isinstance(index, torch.Tensor) else \
                type(index).__name__
            raise TypeError(f"{name}: expected a 1-D int64 tensor, got {got}")
    tensor_checks.operands(values=values, shapes={"values": (col.numel(),)})
    tensor_checks.same_device("crow_indices", crow, col_indices=col, values=values)


def _structure_problem(shape: tuple[int, int], crow: torch.Tensor, col: torch.Tensor) -> str | None:
    """The first condition that keeps (crow, col) from being a valid CSR structure of `shape`, as an error message
    naming the field; None for a valid structure."""
    out_features, in_features = shape
    if crow.numel() != out_features + 1:
        return f"crow_indices: expected {out_features + 1} entries (out_features + 1), got {crow.numel()}"
    nnz = col.numel()
    # One host transfer of a few flags (the structure may live on a GPU).
    first, last = crow[0], crow[-1]
    decreasing = (crow.diff() < 0).any()
    bad_column = ((col < 0) | (col >= in_features)).any() if nnz else torch.zeros((), dtype=torch.bool)
    if nnz > 1:
        step = col.diff() > 0
        starts = crow[1:-1]
        row_start = torch.zeros(nnz, dtype=torch.bool, device=col.device)
        row_start[starts[(starts > 0) & (starts < nnz)]] = True
        unordered = ~(step | row_start[1:]).all()
    else:
        unordered = torch.zeros((), dtype=torch.bool)
    first, last, decreasing, bad_column, unordered = torch.stack(
        [first, last, decreasing.long(), bad_column.long().to(crow.device), unordered.long().to(crow.device)]).tolist()
    conditions = (
        (first != 0, f"crow_indices: expected crow_indices[0] == 0, got {first}"),
        (decreasing, "crow_indices: expected non-decreasing row pointers"),
        (last != nnz, f"crow_indices: expected crow_indices[-1] == {nnz} (the number of column indices), got {last}"),
        (bad_column, f"col_indices: expected every column index in [0, {in_features}) (in_features)"),
        (unordered, "col_indices: expected strictly increasing column indices within every row"))
    return next((message for failed, message in conditions if failed), None)


@torch.compiler.disable  # data-dependent checks run eagerly; a cache hit costs O(1)
def _checked(shape: tuple[int, int], crow: torch.Tensor, col: torch.Tensor) -> tuple[int, int]:
    """Check the structure unless this (crow, col) pair was checked for `shape` and not written since; the version
    counters it was checked at."""
    versions = (crow._version, col._version)
    seen = _CHECKED.get(crow)
    if seen is not None and seen[0]() is col and seen[1:] == (*versions, shape):
        return versions
    problem = _structure_problem(shape, crow, col)
    if problem is not None:
        raise ValueError(problem)
    _CHECKED[crow] = (weakref.ref(col), *versions, shape)
    return versions


@dataclass(frozen=True)
class SparseWeight:
    """A (out_features, in_features) weight that keeps only the masked-in entries.

    `values` holds the kept weights in row-major (CSR) order and is the only trainable part: a layer
    stores it as its parameter and `sparse_linear` sends the weight gradient to it. The index arrays
    are int64 so that more than 2^31 kept entries are addressable. Construction validates the structure
    (see the module docstring); a bad one raises ValueError or TypeError naming the field.
    """

    shape: tuple[int, int]
    crow_indices: torch.Tensor  # (out + 1,) int64: row r holds entries crow[r]:crow[r+1]
    col_indices: torch.Tensor  # (nnz,) int64, strictly increasing within a row
    values: torch.Tensor  # (nnz,)
    # Not a field: `_versions`, the version counters of (crow_indices, col_indices) the structure was checked at.

    def __post_init__(self):
        shape = _check_shape(self.shape)
        _check_tensors(self.crow_indices, self.col_indices, self.values)
        object.__setattr__(self, "_versions", _checked(shape, self.crow_indices, self.col_indices))
        object.__setattr__(self, "shape", shape)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, mask: torch.Tensor) -> SparseWeight:
        rows, cols = mask.nonzero(as_tuple=True)
        counts = torch.bincount(rows, minlength=weight.shape[0])
        crow = torch.zeros(weight.shape[0] + 1, dtype=torch.int64, device=weight.device)
        torch.cumsum(counts, 0, out=crow[1:])
        return cls.trusted((weight.shape[0], weight.shape[1]), crow, cols, weight[rows, cols].contiguous())

    @classmethod
    def trusted(cls, shape: tuple[int, int], crow: torch.Tensor, col: torch.Tensor,
                values: torch.Tensor) -> SparseWeight:
        """A SparseWeight around a structure built by a to_sparse kernel, or one an op checked and rebuilds
        inside its autograd function: built without checks and recorded as checked (the kernels' tests pin that
        their output is valid CSR), so that `check()` finds it."""
        shape, versions = (int(shape[0]), int(shape[1])), (crow._version, col._version)
        _CHECKED[crow] = (weakref.ref(col), *versions, shape)
        weight = object.__new__(cls)
        for field, value in zip(fields(cls), (shape, crow, col, values)):
            object.__setattr__(weight, field.name, value)
        object.__setattr__(weight, "_versions", versions)
        return weight

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

    def with_values(self, values: torch.Tensor) -> SparseWeight:
        """The same structure carrying other values (e.g. a trainable parameter)."""
        return SparseWeight(self.shape, self.crow_indices, self.col_indices, values)

    def check(self) -> None:
        """Re-validate the structure if an index tensor was written in place since it was checked (O(1)
        otherwise: eagerly, a comparison of the version counters this object was checked at). The ops call it
        before every kernel launch; they check the values with their other operands."""
        if torch.compiler.is_compiling() or self._versions != (self.crow_indices._version,
                                                               self.col_indices._version):
            object.__setattr__(self, "_versions", _checked(self.shape, self.crow_indices, self.col_indices))
