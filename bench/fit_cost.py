"""Measure the training-step cost of both SparseLinear paths and fit the coefficients of panning/nn/cost.py.

One step = zero_grad, forward, backward of a fixed output gradient, SGD (momentum 0.9) step, of one SparseLinear
on the masked and on the compressed path, timed interleaved (panning.timing.interleaved, minimum of the rounds)
over shapes, densities and batch sizes. The fit is non-negative least squares on relative error of

    masked      FIXED + B * DENSE_MAC  * out * in  +  DENSE_ELEM  * out * in
    compressed  FIXED + B * SPARSE_MAC * kept      +  SPARSE_ELEM * kept       +  SPARSE_ROW * out

(FIXED, a per-step overhead of each path, is fitted too). Prints the rows of `MEASURED` and the fit's error.

    OMP_NUM_THREADS=1 python bench/fit_cost.py --threads 1
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
from panning.nn import SparseLinear
from panning.timing import interleaved

SHAPES = ((256, 256), (1024, 1024), (3072, 768), (768, 3072), (4096, 1024))
DENSITIES = (0.005, 0.02, 0.05, 0.1, 0.2, 0.5)
BATCHES = (16, 64, 256)


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


def fit(rows: list[dict]) -> dict[str, float]:
    """Coefficients of both paths; each path's relative errors (median, max) printed."""
    features = {
        "masked": lambda r: [1.0, r["batch"] * r["out"] * r["inp"], r["out"] * r["inp"]],
        "compressed": lambda r: [1.0, r["batch"] * r["kept"], r["kept"], r["out"]],
    }
    names = {"masked": ["dense_fixed", "dense_mac", "dense_elem"],
             "compressed": ["sparse_fixed", "sparse_mac", "sparse_elem", "sparse_row"]}
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
    right = (predicted["compressed"] < predicted["masked"]) == np.array([r["compressed"] < r["masked"] for r in rows])
    cost = [max(r["masked"], r["compressed"]) / min(r["masked"], r["compressed"]) for r, ok in zip(rows, right)
            if not ok]
    print(f"path chosen right in {right.sum()} of {len(rows)} cases; the wrong ones cost up to "
          f"{max(cost, default=1):.2f}x the better path")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the measured rows here (JSON)")
    parser.add_argument("--rows", type=Path, help="fit rows measured before (JSON from --out) instead of measuring")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rows is not None:
        rows = json.loads(args.rows.read_text())["rows"]
    else:
        print(f"threads {args.threads}, load average {os.getloadavg()}")
        rows = measure(args.repeats)
        if args.out is not None:
            write_text(args.out, json.dumps(dict(threads=args.threads, load_average=os.getloadavg(), rows=rows)))
    coefficients = fit(rows)
    print(f"    {args.threads}: Coefficients(" + ", ".join(f"{k}={v:.3g}" for k, v in coefficients.items()) + "),")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
