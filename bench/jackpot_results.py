"""Lottery jackpots on pre-trained MNIST-1D and digits CNNs: the results table and plot.

For the 1-D CNN on MNIST-1D and the 2-D CNN on digits (dense models trained first with panning.train and
the model's recipe, cached under --cache):
  - dense accuracy; magnitude pruning alone at 80, 90, 95, 98% (the search's per-layer budgets);
  - jackpot search (magnitude start, short restriction, defaults otherwise) at those sparsities after
    1, 3, 5, 10 search epochs (each its own run with its own cosine schedule), over --seeds search seeds;
  - start ablation at 90%: magnitude vs random scores, --ablation-epochs epochs, the first epoch within
    1 point of dense;
  - restriction ablation at 90 and 95%: short vs none, 10 epochs, with the loss-rise monitor;
  - score learning-rate sensitivity at 90%, 10 epochs: 0.1 (the default), 0.01, 0.001.
Every finished cell is cached in --cache/cells.json (atomically), so an interrupted run continues.
Writes bench/results/jackpot-mnist1d-digits.md and .png.

    PYTHONPATH=. nice python bench/jackpot_results.py          # about 10 min on one core
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from panning import data as datasets
from panning import models, ops
from panning import train as training
from panning.io import atomic_path, write_text
from panning.jackpot import magnitude_masks, search

PAIRS = (("mnist1d", "cnn1d"), ("digits", "cnn2d"))
SPARSITIES = (0.8, 0.9, 0.95, 0.98)
EPOCHS = (1, 3, 5, 10)
ABLATION_SPARSITY = 0.9
RESTRICTION_SPARSITIES = (0.9, 0.95)
LEARNING_RATES = (0.1, 0.01, 0.001)  # score learning-rate sensitivity at 90%, 10 epochs (0.1 is the default)
OUT = Path("bench/results/jackpot-mnist1d-digits")


class Cells:
    """A JSON file of finished cells, rewritten atomically after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.cells = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, compute):
        if key not in self.cells:
            started = time.perf_counter()
            value = compute()
            value["seconds"] = time.perf_counter() - started
            self.cells[key] = value
            write_text(self.path, json.dumps(self.cells, indent=1))
            print(f"  {key}: {json.dumps({k: v for k, v in value.items() if k != 'history'})}", flush=True)
        return self.cells[key]


def pretrained(data: str, arch: str, cache: Path):
    """The dense model (trained with the recipe on first use, from its checkpoint afterwards)."""
    bundle = datasets.load(data)
    torch.manual_seed(0)
    model = models.build(arch, bundle.input_shape, bundle.num_classes)
    result = training.train(model, bundle, **training.RECIPES[arch], seed=0,
                            checkpoint=cache / f"dense-{data}-{arch}.pt", progress=False)
    return bundle, model, result


@torch.no_grad()
def recalibrated(model, masks, bundle) -> float:
    """Test accuracy of the magnitude-pruned model after re-estimating its BatchNorm running statistics on the
    training set (one pass, cumulative average, no weight update): what the search gets for free from running
    in train mode, separated from what the mask changes bring."""
    pruned = masks.apply(copy.deepcopy(model))
    for bn in (m for m in pruned.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        bn.reset_running_stats()
        bn.momentum = None
    pruned.train()
    x = bundle.train.tensors[0]
    for start in range(0, len(x), 256):
        pruned(x[start:start + 256])
    return training.evaluate(pruned, bundle.test)[1]


def run_search(model, bundle, **settings) -> dict:
    result = search(copy.deepcopy(model), bundle, progress=False, **settings)
    return dict(acc=result.history[-1].test_acc, initial_acc=result.initial_test_acc,
                history=[r.test_acc for r in result.history], counters=result.counters())


def collect(cells: Cells, cache: Path, seeds: int, ablation_epochs: int) -> dict:
    table = {}
    for data, arch in PAIRS:
        print(f"{data} / {arch}", flush=True)
        bundle, model, trained = pretrained(data, arch, cache)
        dense = cells.get(f"{data}/dense", lambda: dict(acc=training.evaluate(model, bundle.test)[1],
                                                        epochs=trained.epochs, train_seconds=trained.wall_time))
        entry = {"dense": dense["acc"], "magnitude": {}, "recalibrated": {}, "jackpot": {}, "start": {},
                 "restriction": {}}
        for s in SPARSITIES:
            entry["magnitude"][s] = cells.get(f"{data}/magnitude/{s}", lambda: dict(
                acc=training.evaluate(magnitude_masks(model, s).apply(copy.deepcopy(model)), bundle.test)[1]))["acc"]
            entry["recalibrated"][s] = cells.get(f"{data}/magnitude+bn/{s}", lambda: dict(
                acc=recalibrated(model, magnitude_masks(model, s), bundle)))["acc"]
            for e in EPOCHS:
                entry["jackpot"][s, e] = [cells.get(f"{data}/jackpot/{s}/{e}/seed{seed}", lambda: run_search(
                    model, bundle, sparsity=s, epochs=e, seed=seed))["acc"] for seed in range(seeds)]
        for init in ("magnitude", "random"):
            entry["start"][init] = [cells.get(f"{data}/start/{init}/{ablation_epochs}/seed{seed}", lambda: run_search(
                model, bundle, sparsity=ABLATION_SPARSITY, epochs=ablation_epochs, init=init, seed=seed))
                for seed in range(seeds)]
        for s in RESTRICTION_SPARSITIES:
            for restriction in ("short", "none"):
                entry["restriction"][s, restriction] = [cells.get(
                    f"{data}/restriction/{s}/{restriction}/seed{seed}", lambda: run_search(
                        model, bundle, sparsity=s, epochs=10, restriction=restriction, monitor=True, seed=seed))
                    for seed in range(seeds)]
        entry["lr"] = {lr: [cells.get(
            f"{data}/jackpot/0.9/10/seed{seed}" if lr == 0.1 else f"{data}/lr/{lr}/seed{seed}",
            lambda: run_search(model, bundle, sparsity=0.9, epochs=10, lr=lr, seed=seed))["acc"]
            for seed in range(seeds)] for lr in LEARNING_RATES}
        table[data, arch] = entry
    return table


def pct(values) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def first_within(history: list[float], target: float) -> int | None:
    """1-based epoch at which the test accuracy first reaches `target`, or None."""
    return next((i + 1 for i, acc in enumerate(history) if acc >= target), None)


def markdown(table: dict, seeds: int, ablation_epochs: int, seconds: float, command: str) -> str:
    lines = [
        "# Lottery jackpots in pre-trained MNIST-1D and digits CNNs",
        "",
        f"Generated {datetime.date.today()} by `{command}` on {platform.machine()} CPU, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, top-k backend "
        f"`{ops.dispatch.resolve('topk_mask', torch.device('cpu'))}`; {seconds / 60:.1f} min of compute "
        "(cells cached in runs/).",
        "",
        "Dense models: `panning.train` with the model's recipe, seed 0 (cnn1d: Adam 1e-2, 60 epochs; cnn2d: SGD "
        "0.05, 30 epochs). Search: scores only, weights frozen (bitwise), SGD momentum 0.9, lr 0.1, weight decay "
        "5e-4, cosine, batch 256, per-layer budgets from one global magnitude threshold, classifier dense, "
        f"magnitude start, short restriction. Accuracies in % on the test split; jackpot cells are mean ± std "
        f"over {seeds} search seed(s) (data order), each epoch budget its own run. Sparsity counts the searched "
        "layers (all but the classifier).",
        "",
        "## Accuracy without any weight update",
        "",
        "| data / model | sparsity | dense | magnitude | magnitude + BN stats | "
        + " | ".join(f"jackpot {e} ep" for e in EPOCHS) + " |",
        "|---|---|---|---|---|" + "---|" * len(EPOCHS),
    ]
    for (data, arch), entry in table.items():
        for s in SPARSITIES:
            cells = " | ".join(pct(entry["jackpot"][s, e]) for e in EPOCHS)
            lines.append(f"| {data} / {arch} | {s:.0%} | {100 * entry['dense']:.1f} | "
                         f"{100 * entry['magnitude'][s]:.1f} | {100 * entry['recalibrated'][s]:.1f} | {cells} |")
    lines += ["", "'magnitude + BN stats': the magnitude mask with BatchNorm running statistics re-estimated on the "
              "training set (one pass, no weight update). The search runs in train mode, so its BatchNorm statistics "
              "follow the masked network too; this column separates that effect from the mask search itself "
              "(cnn1d has no BatchNorm).", "", "Target at 90%: within 1 point of dense without any weight update.",
              ""]
    for (data, arch), entry in table.items():
        best = max(statistics.mean(entry["jackpot"][0.9, e]) for e in EPOCHS)
        longer = statistics.mean(r["acc"] for r in entry["start"]["magnitude"])
        gaps = [100 * (entry["dense"] - acc) for acc in (best, longer)]
        verdicts = ["reached" if gap <= 1.0 else "not reached" for gap in gaps]
        lines.append(f"- {data} / {arch}: best mean jackpot at 90% within 10 epochs {100 * best:.1f} vs dense "
                     f"{100 * entry['dense']:.1f} ({gaps[0]:.1f} points below): {verdicts[0]}; after "
                     f"{ablation_epochs} epochs (start ablation, magnitude start) {100 * longer:.1f} "
                     f"({gaps[1]:.1f} points below): {verdicts[1]}.")
    lines += ["", f"## Start ablation ({ABLATION_SPARSITY:.0%}, {ablation_epochs} epochs, short restriction)", "",
              "Epochs until the test accuracy first comes within 1 point of dense (per seed; '-' = never), and "
              "the final accuracy.", "",
              "| data / model | start | accuracy at start | epochs to dense - 1 pt | final |", "|---|---|---|---|---|"]
    for (data, arch), entry in table.items():
        for init, runs in entry["start"].items():
            reached = [first_within(r["history"], entry["dense"] - 0.01) for r in runs]
            lines.append(f"| {data} / {arch} | {init} | {pct([r['initial_acc'] for r in runs])} | "
                         f"{', '.join('-' if e is None else str(e) for e in reached)} | "
                         f"{pct([r['acc'] for r in runs])} |")
    lines += ["", "## Restriction ablation (10 epochs, magnitude start, loss monitored)", "",
              "Pairs: (revival, removal) swaps proposed by the top-k of the new scores / admitted. A *rise* is a "
              "step whose mask changed and whose loss on the same batch (re-run under the new mask, train mode, "
              "BatchNorm statistics untouched) exceeded the loss of the step's own forward under the old mask. "
              "Counts summed over seeds.", "",
              "| data / model | sparsity | restriction | accuracy | pairs proposed | admitted | mask updates | "
              "loss rises | rises / update |", "|---|---|---|---|---|---|---|---|---|"]
    for (data, arch), entry in table.items():
        for (s, restriction), runs in entry["restriction"].items():
            c = {k: sum(r["counters"][k] for r in runs) for k in ("proposed", "admitted", "updates", "rises")}
            share = f"{c['rises'] / c['updates']:.2f}" if c["updates"] else "-"
            lines.append(f"| {data} / {arch} | {s:.0%} | {restriction} | {pct([r['acc'] for r in runs])} | "
                         f"{c['proposed']} | {c['admitted']} | {c['updates']} | {c['rises']} | {share} |")
    lines += ["", "## Score learning-rate sensitivity (90%, 10 epochs, magnitude start, short restriction)", "",
              "| data / model | dense | magnitude | " + " | ".join(f"lr {lr:g}" for lr in LEARNING_RATES) + " |",
              "|---|---|---|" + "---|" * len(LEARNING_RATES)]
    for (data, arch), entry in table.items():
        lines.append(f"| {data} / {arch} | {100 * entry['dense']:.1f} | {100 * entry['magnitude'][0.9]:.1f} | "
                     + " | ".join(pct(entry["lr"][lr]) for lr in LEARNING_RATES) + " |")
    lines += ["", f"![jackpot results]({OUT.name}.png)", ""]
    return "\n".join(lines)


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(table), 2, figsize=(11, 4 * len(table)), squeeze=False)
    for row, ((data, arch), entry) in zip(axes, table.items()):
        grid, start = row
        for s in SPARSITIES:
            means = [100 * statistics.mean(entry["jackpot"][s, e]) for e in EPOCHS]
            line, = grid.plot([0, *EPOCHS], [100 * entry["magnitude"][s], *means], "o-", label=f"{s:.0%}")
        grid.axhline(100 * entry["dense"], color="k", ls="--", label="dense")
        grid.set(xlabel="search epochs (0 = magnitude pruning)", ylabel="test accuracy (%)",
                 title=f"{data} / {arch}: jackpot vs epochs")
        grid.legend(fontsize=8)
        for init, runs in entry["start"].items():
            for i, r in enumerate(runs):
                start.plot(range(len(r["history"]) + 1), [100 * r["initial_acc"], *(100 * a for a in r["history"])],
                           color="C0" if init == "magnitude" else "C3", alpha=0.8,
                           label=f"{init} start" if i == 0 else None)
        start.axhline(100 * entry["dense"], color="k", ls="--", label="dense")
        start.axhline(100 * entry["dense"] - 1, color="gray", ls=":", label="dense - 1 pt")
        start.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{data} / {arch}: start ablation, "
                  f"{ABLATION_SPARSITY:.0%}")
        start.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default="runs/jackpot-results", help="dense checkpoints and finished cells")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds per cell")
    parser.add_argument("--ablation-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    cells = Cells(cache / "cells.json")
    table = collect(cells, cache, args.seeds, args.ablation_epochs)
    seconds = sum(c["seconds"] + c.get("train_seconds", 0.0) for c in cells.cells.values())
    command = "PYTHONPATH=. nice python bench/jackpot_results.py" + (
        f" --seeds {args.seeds}" if args.seeds != 3 else "") + (
        f" --ablation-epochs {args.ablation_epochs}" if args.ablation_epochs != 30 else "")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    plot(table, OUT.with_suffix(".png"))
    write_text(OUT.with_suffix(".md"), markdown(table, args.seeds, args.ablation_epochs, seconds, command))
    print(f"wrote {OUT}.md and .png")


if __name__ == "__main__":
    main()
