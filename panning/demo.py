"""`panning demo`: the library's main job on embedded data, end to end in a few minutes on a laptop CPU.

On MNIST-1D (generated locally) the 1-D CNN is pruned *before training* by several methods at one sparsity
from the same initialization, each pruned network is trained with the same recipe as the dense one, and a
table compares test accuracy, sparsity and effective sparsity. A bar plot is written next to the masks.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from . import data as datasets
from . import models
from .commands import Option, boolean
from .connectivity import effective_sparsity
from .pbt import METHODS
from .prune import prune
from .train import RECIPES, train

DEFAULTS = dict(data="mnist1d", model="cnn1d", sparsity=0.9, methods="random,snip,synflow,panning",
                iterations=20, seed=0, out=Path("runs/demo"), progress=True)
OPTIONS = (
    Option("data", str, "data set (default mnist1d)", datasets.available()),
    Option("model", str, "model (default cnn1d)", models.available()),
    Option("sparsity", float, "fraction of prunable weights removed (default 0.9)"),
    Option("methods", str, f"comma-separated pruning methods (default {DEFAULTS['methods']}; "
           f"choices: {', '.join(m for m in METHODS if m != 'rl_panning')})"),
    Option("iterations", int, "steps of the iterative methods (default 20)"),
    Option("epochs", int, "training epochs of every network (default: the model's recipe)"),
    Option("seed", int, "seed of the initialization, the batches and the training (default 0)"),
    Option("out", Path, "folder for the masks, results.json and the plot (default runs/demo)"),
    Option("threads", int, "CPU threads for torch (default: torch's choice)"),
    Option("progress", boolean, "progress bars (default on)"),
)


def _methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS or m == "rl_panning"]
    if not names or unknown:
        raise ValueError(f"methods: unknown or empty {unknown or text!r}; choose from "
                         f"{', '.join(m for m in METHODS if m != 'rl_panning')}")
    return names


def run(options: dict) -> int:
    """Train dense, prune with each method at the same initialization, train each, print the comparison."""
    opts = {option.dest: None for option in OPTIONS} | options
    methods = _methods(opts["methods"])
    if opts["threads"] is not None:
        torch.set_num_threads(opts["threads"])
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
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(dict(options={k: str(v) for k, v in opts.items()}, rows=rows), indent=1))
    os.replace(tmp, out / "results.json")
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
