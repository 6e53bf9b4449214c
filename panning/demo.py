"""`panning demo`: the library's main job on embedded data, end to end in a few minutes on a laptop CPU.

On MNIST-1D (generated locally) the 1-D CNN is pruned *before training* by several methods at one sparsity
from the same initialization, each pruned network is trained with the same recipe as the dense one, and a
table compares test accuracy, sparsity and effective sparsity. A bar plot is written next to the masks.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from . import data as datasets
from . import models
from .connectivity import effective_sparsity
from .io import atomic_path, write_text
from .pbt import METHODS
from .prune import prune
from .train import RECIPES, train


def run(opts: dict) -> int:
    """Train dense, prune with each method at the same initialization, train each, print the comparison.
    `opts` are the checked options of `panning demo` (panning.cli.demo); `methods` is a list of names."""
    methods = opts["methods"]
    bundle = datasets.load(opts["data"], seed=opts["seed"])
    recipe = dict(RECIPES[opts["model"]])
    if opts["epochs"] is not None:
        recipe["epochs"] = opts["epochs"]
    torch.manual_seed(opts["seed"])
    init = models.build(opts["model"], bundle.input_shape, bundle.num_classes)
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    dense = copy.deepcopy(init)
    result = train(dense, bundle, **recipe, seed=opts["seed"], progress=opts["progress"])
    rows.append(dict(method="dense", sparsity=0.0, effective=0.0, acc=result.test_acc, prune_s=0.0,
                     train_s=result.wall_time))
    for method in methods:
        model = copy.deepcopy(init)
        extra = {"iterations": opts["iterations"]} if "iterations" in METHODS[method].defaults else {}
        started = time.perf_counter()
        masks = prune(model, method, opts["sparsity"], bundle, seed=opts["seed"], progress=opts["progress"], **extra)
        pruned_in = time.perf_counter() - started
        masks.save(out / f"masks-{method}.safetensors")
        effective = effective_sparsity(model, masks, bundle.input_shape)
        result = train(model, bundle, **recipe, masks=masks, seed=opts["seed"], progress=opts["progress"])
        rows.append(dict(method=method, sparsity=masks.sparsity, effective=effective, acc=result.test_acc,
                         prune_s=pruned_in, train_s=result.wall_time))

    _print(rows, opts, recipe["epochs"])
    write_text(out / "results.json", json.dumps(dict(options={k: str(v) for k, v in opts.items()}, rows=rows),
                                                indent=1))
    _plot(out / "demo.png", rows, opts)
    print(f"wrote {out}/ (masks-*.safetensors, results.json, demo.png)")
    return 0


def _print(rows: list[dict], opts: dict, epochs: int) -> None:
    table = Table(title=f"panning demo: {opts['model']} on {opts['data']}, pruned before training to "
                        f"{opts['sparsity']:.0%}, {epochs} epochs each, seed {opts['seed']}")
    for column in ("method", "sparsity", "effective sparsity", "test acc", "prune s", "train s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        table.add_row(r["method"], f"{r['sparsity']:.2%}", f"{r['effective']:.2%}", f"{100 * r['acc']:.2f}%",
                      f"{r['prune_s']:.1f}", f"{r['train_s']:.1f}")
    Console(file=sys.stdout, width=120).print(table)


def _plot(path: Path, rows: list[dict], opts: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["method"] for r in rows], [100 * r["acc"] for r in rows],
           color=["gray"] + ["tab:blue"] * (len(rows) - 1))
    ax.set(ylabel="test accuracy (%)", title=f"{opts['model']} on {opts['data']}, {opts['sparsity']:.0%} sparse")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
