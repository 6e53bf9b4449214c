"""Which path `mode="auto"` gives a sparse layer: the predicted cost of one training step on each path.

A training step of one layer (forward, backward and an SGD-with-momentum step) is modelled as

    masked      dense_fixed  + B * dense_mac  * out * in  +  dense_elem  * out * in
    compressed  sparse_fixed + B * sparse_mac * kept      +  sparse_elem * kept       +  sparse_row * out

seconds, for B batch rows, with one row of coefficients per thread count (the nearest measured one is used).
The per-MAC terms are the GEMMs (dense: ATen's; compressed: the CSR kernels of panning.ops), the per-element
terms what a step touches once per weight (mask, gradient, optimizer state; compressed: the values and their
write-back into the weight), the fixed terms the per-call overhead. The compressed path is taken where it is
predicted cheaper at REFERENCE_BATCH rows.

How the table was measured: `python bench/fit_cost.py --threads T` times both paths of one SparseLinear (fwd +
bwd + SGD step, interleaved, minimum of 3 rounds) over 5 shapes from 256 x 256 to 4096 x 1024, densities 0.005
to 0.5 and batches 16 to 256 on the project's machine (2 shared cores, cpp kernels, fp32), and fits the
coefficients by non-negative least squares on relative error; it prints the rows below. The measured steps are in
bench/results/cost-model-<T>t.json (`--rows` refits them); the fit's error and the load are in docs/results.md.
A thread count without a row of its own uses the nearest measured one.
"""
from __future__ import annotations

from typing import NamedTuple


class Coefficients(NamedTuple):
    dense_fixed: float
    dense_mac: float
    dense_elem: float
    sparse_fixed: float
    sparse_mac: float
    sparse_elem: float
    sparse_row: float


#: threads -> coefficients (seconds), printed by bench/fit_cost.py (the rows measured so far; see docs/results.md).
MEASURED: dict[int, Coefficients] = {
    1: Coefficients(dense_fixed=0, dense_mac=5.4e-11, dense_elem=5.88e-09, sparse_fixed=0.000189, sparse_mac=2.71e-10,
                    sparse_elem=2.3e-08, sparse_row=5.99e-07),
}
REFERENCE_BATCH = 128


def step_costs(out_features: int, in_features: int, kept: int, threads: int,
               batch: int = REFERENCE_BATCH) -> tuple[float, float]:
    """(masked, compressed) predicted seconds of one training step of an (out, in) layer keeping `kept`."""
    c = MEASURED[min(MEASURED, key=lambda t: (abs(t - threads), t))]
    size = out_features * in_features
    masked = c.dense_fixed + batch * c.dense_mac * size + c.dense_elem * size
    compressed = c.sparse_fixed + batch * c.sparse_mac * kept + c.sparse_elem * kept + c.sparse_row * out_features
    return masked, compressed


def compressed_wins(out_features: int, in_features: int, kept: int, threads: int, device_type: str) -> bool:
    """Whether the compressed path is predicted cheaper for a training step of this layer. Measured on CPU only:
    elsewhere the compressed path is taken at densities up to 10%."""
    if device_type != "cpu":
        return kept <= 0.1 * out_features * in_features
    masked, compressed = step_costs(out_features, in_features, kept, threads)
    return compressed < masked
