"""Measure the cost of both SparseLinear paths, or of both kernels of a compressed convolution, and fit the
coefficients of panning/nn/cost.py.

Linear (`--layer linear`). One step = zero_grad, forward, backward of a fixed output gradient, SGD (momentum
0.9) step, of one SparseLinear on the masked and on the compressed path, timed interleaved
(panning.timing.interleaved, minimum of the rounds) over shapes, densities and batch sizes. The fit is
non-negative least squares on relative error of

    masked      FIXED + B * DENSE_MAC  * out * in  +  DENSE_ELEM  * out * in
    compressed  FIXED + B * SPARSE_MAC * kept      +  SPARSE_ELEM * kept       +  SPARSE_ROW * out

(FIXED, a per-step overhead of each path, is fitted too). Prints the rows of `MEASURED` and the fit's error.

Convolution (`--layer conv`). Both kernels of a SparseConv2d on the compressed path (the per-call choice of mode
"auto"), timed interleaved over the convolutions of VGG-19 and ResNet-32 on CIFAR, densities and batches: a
training call (zero_grad, forward, backward of a fixed output gradient, SGD step of the values and bias; the dense
kernel convolves with the weight rebuilt from the values) and an inference call (forward under torch.no_grad; the
dense kernel convolves with the mirror weight). Fits the `MEASURED_CONV` rows of both kinds (the model in
panning/nn/cost.py) the same way.

    OMP_NUM_THREADS=1 python bench/fit_cost.py --threads 1 [--layer conv]
    python bench/fit_cost.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from panning.io import write_text
from panning.nn import SparseConv2d, SparseLinear
from panning.nn.cost import ConvCall
from panning.timing import interleaved

SHAPES = ((256, 256), (1024, 1024), (3072, 768), (768, 3072), (4096, 1024))
DENSITIES = (0.005, 0.02, 0.05, 0.1, 0.2, 0.5)
BATCHES = (16, 64, 256)
# (in, out, size, kernel, stride, padding): the distinct convolutions of VGG-19 and ResNet-32 on CIFAR
CONVS = ((3, 64, 32, 3, 1, 1), (64, 64, 32, 3, 1, 1), (128, 128, 16, 3, 1, 1), (256, 256, 8, 3, 1, 1),
         (512, 512, 4, 3, 1, 1), (512, 512, 2, 3, 1, 1), (32, 32, 32, 3, 1, 1), (32, 64, 32, 3, 2, 1),
         (32, 64, 32, 1, 2, 0), (64, 64, 16, 3, 1, 1), (128, 128, 8, 3, 1, 1))
CONV_DENSITIES = (0.005, 0.02, 0.05, 0.15, 0.4)
CONV_BATCHES = {"training": (8, 32, 64), "inference": (1, 4, 32)}


def stepper(layer: SparseLinear, x: torch.Tensor, dy: torch.Tensor):
    opt = torch.optim.SGD(layer.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        layer(x).backward(dy)
        opt.step()
    return step


def measure(repeats: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for out, inp in SHAPES:
        for density in DENSITIES:
            mask = torch.rand(out, inp, generator=g) < density
            layers = {mode: SparseLinear(inp, out, mode=mode).set_mask(mask) for mode in ("masked", "compressed")}
            for batch in BATCHES:
                x, dy = torch.randn(batch, inp, generator=g), torch.randn(batch, out, generator=g)
                times = interleaved({mode: stepper(layer, x, dy) for mode, layer in layers.items()}, repeats)
                row = dict(out=out, inp=inp, kept=int(mask.sum()), batch=batch,
                           masked=min(times["masked"]), compressed=min(times["compressed"]))
                rows.append(row)
                print(f"{out:5d} x {inp:5d}  density {density:5.3f}  batch {batch:4d}  masked "
                      f"{row['masked'] * 1e3:8.3f} ms  compressed {row['compressed'] * 1e3:8.3f} ms", flush=True)
    return rows


def conv_stepper(layer: SparseConv2d, kernel: str, kind: str, x: torch.Tensor, dy: torch.Tensor):
    """One training or inference call of `layer` (on the compressed path) on `kernel`."""
    if kind == "inference":
        def infer() -> None:
            with torch.no_grad():
                layer._prepare()
                layer._run(x, kernel)
        return infer
    opt = torch.optim.SGD(layer.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        layer._prepare()
        layer._run(x, kernel).backward(dy)
        opt.step()
    return step


def measure_conv(repeats: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for cin, cout, size, k, stride, padding in CONVS:
        for density in CONV_DENSITIES:
            layer = SparseConv2d(cin, cout, k, stride=stride, padding=padding, mode="compressed")
            layer.set_mask(torch.rand(layer.weight.shape, generator=g) < density)
            out_size = (size + 2 * padding - k) // stride + 1
            for kind, batches in CONV_BATCHES.items():
                for batch in batches:
                    x = torch.randn(batch, cin, size, size, generator=g)
                    dy = torch.randn(batch, cout, out_size, out_size, generator=g)
                    times = interleaved({kernel: conv_stepper(layer, kernel, kind, x, dy)
                                         for kernel in ("dense", "sparse")}, repeats)
                    call = ConvCall.of(batch, (cin, size, size), cout, (k, k), (stride, stride), (padding, padding),
                                       (1, 1), layer.values.numel())
                    row = dict(kind=kind, batch=batch, in_elements=call.in_elements, laid_out=call.laid_out, out=cout,
                               fan_in=call.fan_in, positions=call.positions, kept=call.kept, direct=call.direct,
                               dense=min(times["dense"]), sparse=min(times["sparse"]))
                    rows.append(row)
                    print(f"{cin:4d} -> {cout:4d} {size:2d}x{size:2d} k{k} s{stride}  density {density:5.3f}  "
                          f"{kind:9s} batch {batch:3d}  dense {row['dense'] * 1e3:8.3f} ms  "
                          f"sparse {row['sparse'] * 1e3:8.3f} ms", flush=True)
    return rows


LINEAR_MODEL = {
    "masked": (["dense_fixed", "dense_mac", "dense_elem"],
               lambda r: [1.0, r["batch"] * r["out"] * r["inp"], r["out"] * r["inp"]]),
    "compressed": (["sparse_fixed", "sparse_mac", "sparse_elem", "sparse_row"],
                   lambda r: [1.0, r["batch"] * r["kept"], r["kept"], r["out"]]),
}
CONV_MODEL = {
    "dense": (["dense_fixed", "dense_mac", "dense_copy", "dense_elem"],
              lambda r: [1.0, r["batch"] * r["positions"] * r["out"] * r["fan_in"],
                         r["batch"] * (r["in_elements"] + r["out"] * r["positions"]), r["out"] * r["fan_in"]]),
    "sparse": (["sparse_fixed", "sparse_mac", "sparse_pos", "sparse_copy", "sparse_elem", "direct_mac"],
               lambda r: [1.0, (not r["direct"]) * r["batch"] * r["positions"] * r["kept"],
                          (not r["direct"]) * r["positions"] * r["kept"],
                          (not r["direct"]) * r["batch"] * (r["laid_out"] + r["out"] * r["positions"]), r["kept"],
                          r["direct"] * r["batch"] * r["positions"] * r["kept"]]),
}


def fit(rows: list[dict], model: dict) -> dict[str, float]:
    """Coefficients of both paths (`model`: path -> (names, features of a row)); each path's relative errors
    (median, max) printed, and how often the fit picks the faster path."""
    names = {path: spec[0] for path, spec in model.items()}
    features = {path: spec[1] for path, spec in model.items()}
    result, predicted = {}, {}
    for path, feature in features.items():
        a = np.array([feature(r) for r in rows]) / np.array([[r[path]] for r in rows])
        scale = a.max(axis=0)  # columns of one magnitude, for the solver
        coef, _ = nnls(a / scale, np.ones(len(rows)))
        coef = coef / scale
        error = np.abs(a @ coef - 1)
        print(f"{path}: relative error median {np.median(error):.0%}, max {error.max():.0%}")
        result.update(zip(names[path], coef.tolist()))
        predicted[path] = np.array([feature(r) for r in rows]) @ coef
    first, second = model
    right = (predicted[second] < predicted[first]) == np.array([r[second] < r[first] for r in rows])
    cost = [max(r[first], r[second]) / min(r[first], r[second]) for r, ok in zip(rows, right) if not ok]
    print(f"path chosen right in {right.sum()} of {len(rows)} cases; the wrong ones cost up to "
          f"{max(cost, default=1):.2f}x the better path")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layer", choices=("linear", "conv"), default="linear")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the measured rows here (JSON)")
    parser.add_argument("--rows", type=Path, help="fit rows measured before (JSON from --out) instead of measuring")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rows is not None:
        rows = json.loads(args.rows.read_text())["rows"]
    else:
        print(f"threads {args.threads}, load average {os.getloadavg()}")
        rows = (measure if args.layer == "linear" else measure_conv)(args.repeats)
        if args.out is not None:
            write_text(args.out, json.dumps(dict(threads=args.threads, load_average=os.getloadavg(), rows=rows)))
    if args.layer == "linear":
        coefficients = fit(rows, LINEAR_MODEL)
        print(f"    {args.threads}: Coefficients(" + ", ".join(f"{k}={v:.3g}" for k, v in coefficients.items()) + "),")
        return 0
    for kind in CONV_BATCHES:
        print(f"{kind}:")
        coefficients = fit([r for r in rows if r["kind"] == kind], CONV_MODEL)
        print(f'    ({args.threads}, "{kind}"): ConvCoefficients('
              + ", ".join(f"{k}={v:.3g}" for k, v in coefficients.items()) + "),")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
