"""Pruning before training on MNIST-1D and digits: every method, five sparsities, three seeds.

For each cell (data set, method, sparsity, seed) a freshly initialized network (torch.manual_seed(seed))
is pruned with `panning.prune(..., seed=seed)`, measured (sparsity, effective sparsity, collapsed layers)
and trained with the same short recipe (`panning.train.train`, masks held at zero), and its final test
accuracy recorded. Finished cells are cached in a JSON file (written atomically after each cell), so an
interrupted run resumes where it stopped. At the end the script writes a markdown table and a plot.

    nice -n 19 python bench/pbt_results.py            # the full grid, one thread, resumable
    python bench/pbt_results.py --report-only         # rewrite table and plot from the cache
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from panning import data as datasets
from panning import models
from panning.connectivity import collapse_report
from panning.io import atomic_path, write_text
from panning.pbt import METHODS
from panning.prune import prune
from panning.train import train

RESULTS = Path(__file__).resolve().parent / "results"
STEM = "pbt-mnist1d-digits"

#: data set -> (model, training recipe): short versions of panning.train.RECIPES so the grid fits one core.
SETUPS = {
    "mnist1d": ("cnn1d", dict(epochs=10, batch_size=100, lr=1e-2, optimizer="adam", weight_decay=0.0)),
    "digits": ("cnn2d", dict(epochs=6, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4)),
}
SPARSITIES = (0.9, 0.95, 0.98, 0.99, 0.995)
SEEDS = (0, 1, 2)
#: Rows of the table: label -> (method, steps of the exponential schedule or None for one-shot methods).
#: SynFlow keeps its paper's 100 steps; iterative SNIP and FORCE are cut to 20 for time; Panning runs with
#: both 20 and its paper's 100 steps.
VARIANTS = {
    "random": ("random", None),
    "magnitude": ("magnitude", None),
    "snip": ("snip", None),
    "grasp": ("grasp", None),
    "synflow": ("synflow", 100),
    "iterative_snip": ("iterative_snip", 20),
    "force": ("force", 20),
    "panning": ("panning", 20),
    "panning_100": ("panning", 100),
}
PER_CLASS = 10


def settings(data: str, label: str) -> dict:
    """Everything a cell's result depends on besides its key; a cached cell is reused only if these match."""
    method, iterations = VARIANTS.get(label, (label, None))
    return dict(model=SETUPS[data][0], recipe=SETUPS[data][1], method=method, iterations=iterations,
                per_class=PER_CLASS if method in METHODS and "per_class" in METHODS[method].defaults else None)


def cell_key(data: str, label: str, sparsity: float, seed: int) -> str:
    return f"{data}/{label}/{sparsity}/{seed}"


def run_cell(bundle, data: str, label: str, sparsity: float, seed: int) -> dict:
    """Prune, measure, train and test one cell; label "dense" (sparsity 0) trains the dense network."""
    cell = settings(data, label)
    torch.manual_seed(seed)
    model = models.build(cell["model"], bundle.input_shape, bundle.num_classes)
    started = time.perf_counter()
    masks = None
    if label != "dense":
        options = {key: cell[key] for key in ("iterations", "per_class") if cell[key] is not None}
        masks = prune(model, cell["method"], sparsity, bundle, seed=seed, **options)
    prune_seconds = time.perf_counter() - started
    measured = collapse_report(model, masks, bundle.input_shape) if masks is not None else None
    trained = train(model, bundle, masks=masks, seed=seed, progress=False, **cell["recipe"])
    return dict(
        data=data, method=label, sparsity=sparsity, seed=seed, settings=cell, test_acc=trained.test_acc,
        actual_sparsity=measured.sparsity if measured else 0.0,
        effective_sparsity=measured.effective_sparsity if measured else 0.0,
        collapsed=measured.collapsed if measured else [],
        prune_seconds=prune_seconds, train_seconds=trained.wall_time,
    )


def load_cache(path: Path, fresh: bool) -> dict:
    """{"cells": {key: result}} from `path`, keeping only cells run with the current settings."""
    if fresh or not path.exists():
        return {"cells": {}}
    cells = json.loads(path.read_text())["cells"]
    current = {key: c for key, c in cells.items()
               if c.get("settings") == json.loads(json.dumps(settings(c["data"], c["method"])))}
    if len(current) < len(cells):
        print(f"{len(cells) - len(current)} cached cells were run with other settings: rerunning them", file=sys.stderr)
    return {"cells": current}



def grid(datas: list[str]) -> list[tuple[str, str, float, int]]:
    cells = []
    for data in datas:
        for seed in SEEDS:
            cells.append((data, "dense", 0.0, seed))
            cells += [(data, label, sparsity, seed) for sparsity in SPARSITIES for label in VARIANTS]
    return cells


# -- report -------------------------------------------------------------------------------------------

def summarize(cells: dict, data: str, method: str, sparsity: float) -> dict | None:
    runs = [c for c in cells.values() if c["data"] == data and c["method"] == method and c["sparsity"] == sparsity]
    if not runs:
        return None
    accs = [100 * r["test_acc"] for r in runs]
    return dict(n=len(runs), mean=statistics.fmean(accs), std=statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                effective=statistics.fmean(r["effective_sparsity"] for r in runs),
                collapsed=sum(bool(r["collapsed"]) for r in runs),
                prune_seconds=statistics.fmean(r["prune_seconds"] for r in runs))


def markdown(cache: dict, datas: list[str], ran: tuple[int, float] | None) -> str:
    cells = cache["cells"]
    lines = [f"# Pruning before training: MNIST-1D and digits ({datetime.date.today().isoformat()})", "",
             "Test accuracy (%) after the same short training recipe, mean ± std over seeds "
             f"{', '.join(map(str, SEEDS))}; below it, the mean effective sparsity (pruned or disconnected "
             "weights, %) and, where any seed's network collapsed (no input-output path), how many. "
             "Best mean per column in bold.", "",
             "Setup: " + "; ".join(f"{d}: {m}, {r['optimizer']} lr {r['lr']}, batch {r['batch_size']}, "
                                    f"{r['epochs']} epochs, cosine" for d, (m, r) in SETUPS.items() if d in datas)
             + f". Batches of {PER_CLASS} samples per class. Steps of the exponential schedule: "
             + ", ".join(f"{label} {n}" for label, (_, n) in VARIANTS.items() if n)
             + " (iterative SNIP, FORCE and the `panning` row use 20 instead of the papers' 100 steps to fit the "
             "CPU budget; `panning_100` is Panning with 100).", ""]
    for data in datas:
        dense = summarize(cells, data, "dense", 0.0)
        model = SETUPS[data][0]
        lines += [f"## {data} ({model})", ""]
        if dense:
            lines += [f"Dense {model}: {dense['mean']:.1f} ± {dense['std']:.1f} % ({dense['n']} seeds).", ""]
        lines += ["| method | " + " | ".join(f"{100 * s:g}%" for s in SPARSITIES) + " | prune s |",
                  "|---|" + "---:|" * (len(SPARSITIES) + 1)]
        stats = {(m, s): summarize(cells, data, m, s) for m in VARIANTS for s in SPARSITIES}
        best = {s: max((stats[m, s]["mean"] for m in VARIANTS if stats[m, s]), default=None) for s in SPARSITIES}
        for method in VARIANTS:
            row, seconds = [], []
            for s in SPARSITIES:
                st = stats[method, s]
                if st is None:
                    row.append("—")
                    continue
                acc = f"{st['mean']:.1f} ± {st['std']:.1f}"
                acc = f"**{acc}**" if math.isclose(st["mean"], best[s]) else acc
                extra = f" ({st['collapsed']} collapsed)" if st["collapsed"] else ""
                row.append(f"{acc}<br>eff {100 * st['effective']:.2f}{extra}")
                seconds.append(st["prune_seconds"])
            mean_seconds = f"{statistics.fmean(seconds):.2f}" if seconds else "—"
            lines.append(f"| {method} | " + " | ".join(row) + f" | {mean_seconds} |")
        lines.append("")
    shown = [c for c in cells.values() if c["data"] in datas]
    total = sum(c["prune_seconds"] + c["train_seconds"] for c in shown)
    lines += [f"{len(shown)} cells; pruning + training time summed over cells: {total / 60:.1f} min"
              + (f"; this invocation ran {ran[0]} of them in {ran[1] / 60:.1f} min" if ran else "")
              + f". Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s), shared with other jobs (times are indicative).",
              "", f"Reproduce: `nice -n 19 python bench/pbt_results.py` (resumes from `{STEM}.json`).", ""]
    return "\n".join(lines)


def plot(cache: dict, datas: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = cache["cells"]
    fig, axes = plt.subplots(1, len(datas), figsize=(6 * len(datas), 4.5), squeeze=False)
    for ax, data in zip(axes[0], datas):
        for method in VARIANTS:
            points = [(s, summarize(cells, data, method, s)) for s in SPARSITIES]
            points = [(s, st) for s, st in points if st]
            if not points:
                continue
            x = [100 * (1 - s) for s, _ in points]
            ax.errorbar(x, [st["mean"] for _, st in points], yerr=[st["std"] for _, st in points], marker="o",
                        capsize=3, label=method, linewidth=2.5 if method.startswith("panning") else 1.2,
                        linestyle=":" if method == "panning_100" else "-")
        dense = summarize(cells, data, "dense", 0.0)
        if dense:
            ax.axhline(dense["mean"], color="black", linestyle="--", linewidth=1, label="dense")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xticks([100 * (1 - s) for s in SPARSITIES], [f"{100 * s:g}%" for s in SPARSITIES])
        ax.set_xlabel("sparsity")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{data} ({SETUPS[data][0]})")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core)")
    parser.add_argument("--fresh", action="store_true", help="ignore (and overwrite) the cache")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the table and plot from the cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = args.out_dir / f"{STEM}.json"
    cache = load_cache(cache_path, args.fresh)
    started = time.perf_counter()
    if not args.report_only:
        todo = [c for c in grid(args.data) if cell_key(*c) not in cache["cells"]]
        bundles = {data: datasets.load(data) for data in args.data}
        for i, (data, method, sparsity, seed) in enumerate(todo, 1):
            result = run_cell(bundles[data], data, method, sparsity, seed)
            cache["cells"][cell_key(data, method, sparsity, seed)] = result
            write_text(cache_path, json.dumps(cache, indent=1))
            print(f"[{i}/{len(todo)}] {data} {method} {sparsity} seed {seed}: acc {100 * result['test_acc']:.1f}% "
                  f"eff {100 * result['effective_sparsity']:.2f}% prune {result['prune_seconds']:.1f}s "
                  f"train {result['train_seconds']:.1f}s", flush=True)
    ran = None if args.report_only else (len(todo), time.perf_counter() - started)
    write_text(args.out_dir / f"{STEM}.md", markdown(cache, args.data, ran))
    plot(cache, args.data, args.out_dir / f"{STEM}.png")
    print(f"wrote {args.out_dir / STEM}.md and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
