"""What `panning bench` measures: the CPU benchmark cases of panning's kernels and the results table
(docs/benchmarks.md).

Each case is one op at one shape. Its variants are timed side by side: `ours` (panning.ops on the backend the
dispatch picks by default), the way a user would write it in plain torch (and torch.sparse CSR for the
sparse path), and the `floor`: a torch primitive that moves the bytes the op must move (one read of the
scores, two reads of the indices and one write of the output), or runs the dense GEMM a masked matmul cannot
beat, or a dense GEMM with as many multiply-adds as a sparse matmul's kept entries. Each target is a ratio between
two variants of the same case, so it is read off one run.

Three ways to run the cases, all on the same definitions:
- `python -m bench` runs bench/test_cpu_kernels.py under pytest-benchmark (one group per case) and writes
  JSON, a markdown table of ratios and a plot under bench/results/;
- `panning bench` prints the same table, timed here without pytest (`rows`) with panning.timing.interleaved,
  the timing helper every script under bench/ uses.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .. import ops
from ..io import save_figure
from ..ops import dispatch, reference
from ..sparsity import keep_count
from ..timing import interleaved, summary

SPARSITIES = (0.90, 0.95, 0.99)


@dataclass(frozen=True)
class Target:
    """`ours` must be at least `ratio` times faster than `baseline` (ratio = baseline time / ours time), or,
    for baseline "floor", at most `ratio` times slower than the floor."""

    baseline: str
    ratio: float

    def met(self, ours: float, base: float) -> bool:
        return ours <= self.ratio * base if self.baseline == "floor" else base >= self.ratio * ours

    def __str__(self) -> str:
        return f"<= {self.ratio:g}x floor" if self.baseline == "floor" else f">= {self.ratio:g}x {self.baseline}"


@dataclass(frozen=True)
class Case:
    """One op at one shape: `build()` allocates the inputs and returns the variants {name: fn}."""

    group: str
    names: tuple[str, ...]  # the variants build() returns, in order
    build: Callable[[], dict[str, Callable[[], object]]]
    targets: tuple[Target, ...] = ()
    floor: str = ""  # what the floor variant moves or computes
    extra: dict = field(default_factory=dict)


_BUILT: dict[str, dict[str, Callable[[], object]]] = {}


def built(case: Case) -> dict[str, Callable[[], object]]:
    """The case's variants, built once and kept only while its group runs (the big inputs take hundreds of MB):
    the pytest-benchmark suites time one variant per test."""
    if case.group not in _BUILT:
        _BUILT.clear()
        _BUILT[case.group] = case.build()
    return _BUILT[case.group]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _read(*tensors: torch.Tensor) -> None:
    """One streaming read of each (floating) tensor."""
    for t in tensors:
        t.sum()


def topk_case(n: int, sparsity: float = 0.9) -> Case:
    def build():
        scores = torch.randn(n, generator=_gen(3))
        k = keep_count(n, sparsity)

        def with_topk():
            mask = torch.zeros(n, dtype=torch.bool)
            mask[torch.topk(scores, k, sorted=False).indices] = True
            return mask

        return {"ours": lambda: ops.topk_mask(scores, k),
                "torch.topk": with_topk,
                # a threshold mask: not exact under ties, but what users write
                "torch.kthvalue": lambda: scores >= torch.kthvalue(scores, n - k + 1).values,
                "floor": lambda: _read(scores)}
    return Case(f"topk_mask {n:,} fp32 {sparsity:.0%}", ("ours", "torch.topk", "torch.kthvalue", "floor"), build,
                (Target("torch.kthvalue", 20), Target("torch.topk", 20), Target("floor", 3)),
                "one read of the scores")


def prune_case(n: int, sparsity: float = 0.9) -> Case:
    side = int(n ** 0.5)

    def build():
        layer = nn.Linear(side, side, bias=False)

        def with_prune():
            torch_prune.global_unstructured([(layer, "weight")], torch_prune.L1Unstructured, amount=sparsity)
            torch_prune.remove(layer, "weight")

        scores = layer.weight.detach().abs().reshape(-1)
        k = keep_count(scores.numel(), sparsity)
        return {"ours": lambda: ops.topk_mask(scores, k), "prune.global_unstructured": with_prune}
    return Case(f"topk_mask vs torch prune {side * side:,} {sparsity:.0%}", ("ours", "prune.global_unstructured"),
                build, (Target("prune.global_unstructured", 100),))


def saliency_case(n: int, k: int = 3) -> Case:
    def build():
        g = _gen(0)
        indices = torch.randn(k, n, generator=g) * 2 + 5
        weights = torch.rand(1, k, generator=g, dtype=torch.float64)
        out = torch.empty(n)
        return {"ours": lambda: ops.saliency(indices, weights),
                "plain torch": lambda: reference.saliency(indices, weights),
                "floor": lambda: (_read(indices), _read(indices), out.fill_(1.0))}
    return Case(f"saliency {k} x {n:,} fp32", ("ours", "plain torch", "floor"), build,
                (Target("plain torch", 20), Target("floor", 2)), "two reads of the indices and one write of the scores")


def masked_case(m: int, i: int, o: int, backward: bool) -> Case:
    """y = x (W*M)^T: forward, or forward + backward as in a jackpot search (weights frozen, the straight-through
    score gradient dW_eff * W and dx)."""
    def build():
        g = _gen(1)
        x, w = torch.randn(m, i, generator=g), torch.randn(o, i, generator=g)
        mask = (torch.rand(o, i, generator=g) < 0.5).float()
        if not backward:
            return {"ours": lambda: ops.masked_linear(x, w, mask),
                    "x @ (W*M).T": lambda: x @ (w * mask).t(),
                    "floor": lambda: x @ w.t()}
        dy = torch.randn(m, o, generator=g)
        xg, score, wg = x.clone().requires_grad_(), mask.clone().requires_grad_(), w.clone().requires_grad_()
        return {"ours": lambda: ops.masked_linear(xg, w, score, score_grad=True).backward(dy),
                "x @ (W*M).T": lambda: (xg @ (w * score).t()).backward(dy),
                "floor": lambda: (xg @ wg.t()).backward(dy)}  # dense layer: dx and dW GEMMs, no mask
    what = "fwd+bwd (score grad)" if backward else "fwd"
    return Case(f"masked_linear {what} {m}x{i}x{o}", ("ours", "x @ (W*M).T", "floor"), build,
                (Target("x @ (W*M).T", 1.0),), "the dense layer on the same shape")


def sparse_case(m: int, i: int, o: int, sparsity: float, backward: bool) -> Case:
    want = {(0.95, False): (Target("dense", 6), Target("torch CSR", 2)), (0.99, False): (Target("dense", 20),),
            (0.95, True): (Target("dense", 4),)}.get((sparsity, backward), ())

    def build():
        g = _gen(2)
        x, w = torch.randn(m, i, generator=g), torch.randn(o, i, generator=g)
        mask = torch.rand(o, i, generator=g) >= sparsity
        dense_w = w * mask
        sw = ops.to_sparse(w, mask)
        rows = max(1, round(sw.nnz / i))  # a dense weight with as many multiply-adds as the kept entries
        w_floor = w[:rows].clone()
        if not backward:
            with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                csr = dense_w.to_sparse_csr()
            return {"ours": lambda: ops.sparse_linear(x, sw),
                    "dense": lambda: x @ dense_w.t(),
                    "torch CSR": lambda: torch.sparse.mm(csr, x.t()).t(),
                    "floor": lambda: x @ w_floor.t()}
        dy = torch.randn(m, o, generator=g)
        xg, wg = x.clone().requires_grad_(), dense_w.clone().requires_grad_()
        swg = sw.with_values(sw.values.clone().requires_grad_())
        w_floor.requires_grad_()
        dy_floor = torch.randn(m, rows, generator=g)
        return {"ours": lambda: ops.sparse_linear(xg, swg).backward(dy),
                "dense": lambda: (xg @ wg.t()).backward(dy),
                "floor": lambda: (xg @ w_floor.t()).backward(dy_floor)}
    what = "fwd+bwd" if backward else "fwd"
    names = ("ours", "dense", "floor") if backward else ("ours", "dense", "torch CSR", "floor")
    return Case(f"sparse_linear {what} {m}x{i}x{o} {sparsity:.0%}", names, build, want,
                "a dense GEMM with as many multiply-adds (x, y and the CSR arrays move fewer bytes than it takes)")


def cases(quick: bool) -> list[Case]:
    """Every benchmark case; `quick` shrinks the shapes to seconds in all (smoke tests)."""
    n, (m, i, o) = (1_000_000, (64, 1024, 1024)) if quick else (20_000_000, (256, 4096, 4096))
    found = [topk_case(n), prune_case(n), saliency_case(n)]
    for shape in ([(m, i, o)] if quick else [(m, i, o), (256, 1024, 1024), (256, 40, 1024)]):
        found += [masked_case(*shape, backward=False), masked_case(*shape, backward=True)]
    for sparsity in SPARSITIES:
        found += [sparse_case(m, i, o, sparsity, backward=False), sparse_case(m, i, o, sparsity, backward=True)]
    return found


def backends() -> str:
    """The backend each op takes by default on the CPU (what `ours` ran)."""
    cpu = torch.device("cpu")
    return ", ".join(f"{op} {dispatch.resolve(op if op in dispatch.OPS else op + '_fwd', cpu)}"
                     for op in dict.fromkeys(dispatch.public_op(op) for op in dispatch.OPS))


def row(case: Case, best: dict[str, float]) -> dict:
    """The table row of one case from the minimum seconds of its variants."""
    ours = best["ours"]
    return {"group": case.group, "ours_ms": 1e3 * ours,
            "variants_ms": {name: 1e3 * t for name, t in best.items()},
            "ratios": {name: t / ours for name, t in best.items() if name not in ("ours", "floor")},
            "ours_vs_floor": ours / best["floor"] if "floor" in best else None, "floor": case.floor,
            "targets": [{"target": str(t), "met": t.met(ours, best[t.baseline])} for t in case.targets]}


def rows(quick: bool, repeats: int | None = None) -> list[dict]:
    """The table, timed here with `interleaved` (what `panning bench` prints)."""
    repeats = repeats or (3 if quick else 5)
    table = []
    for case in cases(quick):
        variants = case.build()
        best = {name: v[0] for name, v in summary(interleaved(variants, repeats)).items()}
        table.append(row(case, best))
        del variants
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| case | ours ms | ratios (baseline time / ours) | ours / floor | targets |", "|---|---|---|---|---|"]
    for r in table:
        ratios = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in r["ratios"].items())
        floor = f"{r['ours_vs_floor']:.2f}x" if r["ours_vs_floor"] is not None else "-"
        targets = ", ".join(f"{t['target']}: {'met' if t['met'] else 'MISSED'}" for t in r["targets"]) or "-"
        lines.append(f"| {r['group']} | {r['ours_ms']:.2f} | {ratios} | {floor} | {targets} |")
    return "\n".join(lines)


def plot(table: list[dict], path: str | os.PathLike, title: str) -> None:
    """A bar per case: ours against each baseline (ratio, log scale) and against its floor."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = [r["group"] for r in table]
    names = sorted({name for r in table for name in r["ratios"]})
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(labels) + 1.5))
    height = 0.8 / (len(names) + 1)
    for j, name in enumerate(names + ["floor / ours"]):
        values = [(r["ratios"].get(name) if name != "floor / ours" else
                   (1 / r["ours_vs_floor"] if r["ours_vs_floor"] else None)) for r in table]
        ys = [y + j * height for y, v in enumerate(values) if v]
        ax.barh(ys, [v for v in values if v], height=height, label=name)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks([y + 0.4 for y in range(len(labels))], labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speed of ours relative to each variant (> 1: ours faster)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path, dpi=110)
