"""Which path `mode="auto"` gives a sparse layer, and which kernel a compressed convolution runs per call: the
predicted cost of each.

Linear layers. A training step of one layer (forward, backward and an SGD-with-momentum step) is modelled as

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

Convolutions. On "auto" a convolution that a compiled kernel can run compressed always trains its kept values
(optimizer state sized by the kept count) and picks, at every call, the cheaper of two kernels for the call's
shape: the sparse kernel (panning.ops.sparse_conv2d / sparse_conv1d) or torch's dense convolution on the weight
(in training rebuilt from the values, in inference the mirror weight as it is, no copy). For B batch rows, C * H
* W input elements per row, O output channels, F = C * prod(kernel) inputs per output, P output positions and K
kept weights, a call costs

    dense   dense_fixed  + B * dense_mac  * P * O * F  +  dense_copy * B * (C * H * W + O * P)
                                                                                  +  dense_elem  * O * F
    sparse  sparse_fixed + B * sparse_mac * P * K  +  sparse_pos * P * K
                         + sparse_copy * B * (L + O * P)                          +  sparse_elem * K
    sparse, on the kernel's direct path:
            sparse_fixed + B * direct_mac * P * K                                 +  sparse_elem * K

seconds (the direct path, `panning.ops.sparse_conv.direct_path`, convolves x in place: no layout, no copies),
with one row of coefficients for a training call (forward + backward + the SGD step of its parameter)
and one for an inference call (forward alone), per thread count. `sparse_pos` is the part of the sparse kernel's
work that does not shrink with the batch (the batch-last layout fills whole vectors of the batch: batch 1 costs
nearly what batch 16 does), `sparse_copy` its layout copies of x and y (and dy, dx), of L = C * H * W input
elements (C * P for a 1x1 convolution without padding, run on the strided slice of x it reads); `dense_copy` the
memory-bound part of torch's convolution (its strided 1x1 and 3-channel convolutions cost far more than their
MACs). The table is fitted by `python bench/fit_cost.py --layer conv --threads T` over the convolutions of
VGG-19 and ResNet-32 on CIFAR, densities 0.005 to 0.4, training calls at batches 8 to 64 and inference calls at
batches 1 to 32; the steps are in bench/results/cost-model-conv-<T>t.json, the fit's error in docs/results.md.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from panning.ops.sparse_conv import direct_path


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
    1: Coefficients(dense_fixed=0.000169, dense_mac=2.74e-11, dense_elem=2.54e-09, sparse_fixed=0.000218,
                    sparse_mac=1.07e-10, sparse_elem=4.67e-09, sparse_row=5.13e-07),
    2: Coefficients(dense_fixed=0.000203, dense_mac=1.46e-11, dense_elem=1.43e-09, sparse_fixed=0.000261,
                    sparse_mac=5.64e-11, sparse_elem=2.59e-09, sparse_row=3.68e-07),
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


class ConvCoefficients(NamedTuple):
    dense_fixed: float
    dense_mac: float
    dense_copy: float
    dense_elem: float
    sparse_fixed: float
    sparse_mac: float
    sparse_pos: float
    sparse_copy: float
    sparse_elem: float
    direct_mac: float


#: (threads, "training" | "inference") -> coefficients (seconds), printed by `bench/fit_cost.py --layer conv`.
MEASURED_CONV: dict[tuple[int, str], ConvCoefficients] = {
    (1, "training"): ConvCoefficients(dense_fixed=0.000345, dense_mac=2.41e-11, dense_copy=1.38e-09,
                                      dense_elem=5.64e-09, sparse_fixed=0.000695, sparse_mac=6.07e-11,
                                      sparse_pos=2.04e-10, sparse_copy=1.92e-09, sparse_elem=5.15e-08,
                                      direct_mac=3.55e-10),
    (1, "inference"): ConvCoefficients(dense_fixed=3.6e-05, dense_mac=1.2e-11, dense_copy=4.57e-10,
                                       dense_elem=3.33e-10, sparse_fixed=0.000114, sparse_mac=1.13e-11,
                                       sparse_pos=5.44e-10, sparse_copy=9.82e-10, sparse_elem=4.52e-09,
                                       direct_mac=1.71e-10),
    (2, "training"): ConvCoefficients(dense_fixed=0.000592, dense_mac=1.28e-11, dense_copy=6.53e-10,
                                      dense_elem=2.7e-09, sparse_fixed=0.000665, sparse_mac=3.04e-11,
                                      sparse_pos=1.99e-10, sparse_copy=1.1e-09, sparse_elem=2.85e-08,
                                      direct_mac=1.83e-10),
    (2, "inference"): ConvCoefficients(dense_fixed=6.83e-05, dense_mac=6.56e-12, dense_copy=2.51e-10,
                                       dense_elem=1.77e-10, sparse_fixed=0.000116, sparse_mac=5.24e-12,
                                       sparse_pos=3.04e-10, sparse_copy=5.71e-10, sparse_elem=5.84e-09,
                                       direct_mac=9.48e-11),
}


class ConvCall(NamedTuple):
    """The shape of one convolution call, as the conv cost model reads it."""

    batch: int
    in_elements: int  # C * H * W of one batch row
    laid_out: int  # input elements of one batch row the sparse kernel lays out (`ConvCall.of`)
    out_channels: int
    fan_in: int  # C * prod(kernel)
    positions: int  # output positions per batch row
    kept: int
    direct: bool  # the sparse kernel takes its direct path (`ConvCall.of`)

    @classmethod
    def of(cls, batch: int, in_shape: tuple[int, ...], out_channels: int, kernel: tuple[int, ...],
           stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...], kept: int,
           dtype: torch.dtype = torch.float32) -> ConvCall:
        """The call of a convolution on `batch` samples of shape `in_shape` (C, *spatial). The sparse kernel lays
        out all C * H * W input elements, except for a 1x1 convolution without padding: panning.ops runs it on
        the strided slice of x it reads, C * P elements."""
        positions = math.prod((size + 2 * p - d * (k - 1) - 1) // s + 1
                              for size, k, s, p, d in zip(in_shape[1:], kernel, stride, padding, dilation))
        pointwise = all(k == 1 for k in kernel) and all(p == 0 for p in padding)
        in_elements = math.prod(in_shape)
        laid_out = in_shape[0] * positions if pointwise else in_elements
        direct = direct_path((batch, *in_shape), dtype, out_channels, kept, kernel_size=kernel, stride=stride,
                             padding=padding, dilation=dilation)
        return cls(batch, in_elements, laid_out, out_channels, in_shape[0] * math.prod(kernel), positions, kept,
                   direct)


def conv_costs(call: ConvCall, threads: int, kind: str) -> tuple[float, float]:
    """(dense, sparse) predicted seconds of one convolution call; `kind` is "training" or "inference"."""
    c = MEASURED_CONV[min((key for key in MEASURED_CONV if key[1] == kind), key=lambda k: (abs(k[0] - threads), k))]
    b, p, weights, kept = call.batch, call.positions, call.out_channels * call.fan_in, call.kept
    dense = (c.dense_fixed + b * c.dense_mac * p * weights
             + c.dense_copy * b * (call.in_elements + call.out_channels * p) + c.dense_elem * weights)
    if call.direct:
        sparse = c.sparse_fixed + b * c.direct_mac * p * kept + c.sparse_elem * kept
    else:
        sparse = (c.sparse_fixed + b * c.sparse_mac * p * kept + c.sparse_pos * p * kept
                  + c.sparse_copy * b * (call.laid_out + call.out_channels * p) + c.sparse_elem * kept)
    return dense, sparse


def sparse_conv_wins(call: ConvCall, threads: int, training: bool, device_type: str) -> bool:
    """Whether the sparse kernel is predicted cheaper than the dense convolution for this call. Measured on CPU
    only: elsewhere the sparse kernel runs training calls at densities up to 10% and no inference call."""
    if device_type != "cpu":
        return training and call.kept <= 0.1 * call.out_channels * call.fan_in
    dense, sparse = conv_costs(call, threads, "training" if training else "inference")
    return sparse < dense


def compressed_wins(out_features: int, in_features: int, kept: int, threads: int, device_type: str) -> bool:
    """Whether the compressed path is predicted cheaper for a training step of this layer. Measured on CPU only:
    elsewhere the compressed path is taken at densities up to 10%."""
    if device_type != "cpu":
        return kept <= 0.1 * out_features * in_features
    masked, compressed = step_costs(out_features, in_features, kept, threads)
    return compressed < masked
