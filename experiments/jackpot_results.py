"""Lottery jackpots on the protocol models (docs/jackpot.md, "The experiment"): table, plot and JSON.

For every (data, model, width, sparsity) of PROTOCOL and every seed (the seed trains the dense model with
panning.train and the model's recipe, splits digits, and orders the search's batches):
  - dense accuracy; magnitude pruning alone; magnitude + BatchNorm re-estimation (one pass, no weight update);
  - jackpot search with the safe preset and with the authors' preset after 1, 3, 5, 10 epochs (each its own
    run with its own cosine schedule), no weight update;
  - start ablation: safe preset, magnitude vs random start, ABLATION_EPOCHS epochs: first epoch within 1 point
    of dense;
  - restriction ablation: safe preset, short vs none, 10 epochs, loss-rise monitor on;
  - why the safe start (seed 0 of the first two configurations, search seed 100, 3 epochs): starts |w| and
    flat at lr 0.1 and 0.01, and how far one lr-0.1 step moves the scores against the flat start's margin.
Every finished cell is cached in --cache/cells.json (atomically), so an interrupted run continues where it
stopped. Writes experiments/results/jackpot-mnist1d-digits.md, .png and .json.

    nice -n 10 .venv/bin/python experiments/jackpot_results.py          # one thread; --seeds 3 by default
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
from torch.nn import functional as F
from tqdm.auto import tqdm

from panning import data as datasets, models, train as training
from panning.arena import except_last
from panning.io import save_figure, write_text
from panning.jackpot import SearchSpace, magnitude_mask, magnitude_masks, search
from panning.sparsity import layer_budgets

# (data, model, width, sparsity): MNIST-1D at widths where the sparsity is not trivial, digits at 90%; in the
# order they run (the done-when configurations first, the costly wide ones last).
PROTOCOL = (("mnist1d", "cnn1d", 2.0, 0.9), ("digits", "cnn2d", 1.0, 0.9), ("mnist1d", "cnn1d", 4.0, 0.95),
            ("mnist1d", "cnn1d", 8.0, 0.98))
EPOCHS = (1, 3, 5, 10)
PRESETS = ("safe", "authors")
ABLATION_EPOCHS = 30
# The start / lr probe behind the safe preset (docs/jackpot.md): label -> search settings (3 epochs, seed 100).
PROBES = {"|w|, lr 0.1 (safe)": dict(), "|w|, lr 0.01": dict(lr=0.01), "flat, lr 0.1": dict(init="flat"),
          "flat, lr 0.01": dict(init="flat", lr=0.01), "authors' preset": dict(preset="authors")}
PROBED = PROTOCOL[:2]
OUT = Path("experiments/results/jackpot-mnist1d-digits")


class Cells:
    """A JSON file of finished cells, rewritten atomically after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.cells = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, compute) -> dict:
        if key not in self.cells:
            started = time.perf_counter()
            value = compute()
            value["seconds"] = time.perf_counter() - started
            self.cells[key] = value
            write_text(self.path, json.dumps(self.cells, indent=1))
        return self.cells[key]


def config_name(data: str, arch: str, width: float, sparsity: float) -> str:
    return f"{data}/{arch}-w{width:g}/{sparsity:g}"


def pretrained(data: str, arch: str, width: float, seed: int, cache: Path):
    """(bundle, dense model, seconds spent training now): trained with the recipe once, then from its
    checkpoint."""
    bundle = datasets.load(data, seed=seed)
    torch.manual_seed(seed)
    model = models.build(arch, bundle.input_shape, bundle.num_classes, width=width)
    result = training.train(model, bundle, **training.RECIPES[arch], seed=seed,
                            checkpoint=cache / f"dense-{data}-{arch}-w{width:g}-seed{seed}.pt", progress=False)
    return bundle, model, result.wall_time


def magnitude_cell(model, bundle, sparsity: float, reestimate: bool) -> dict:
    pruned = magnitude_masks(model, sparsity).apply(copy.deepcopy(model))
    if reestimate:
        training.reestimate_batchnorm(pruned, bundle.train)
    return dict(acc=training.evaluate(pruned, bundle.test)[1])


def search_cell(model, bundle, **settings) -> dict:
    result = search(copy.deepcopy(model), bundle, progress=False, **settings)
    return dict(acc=result.history[-1].test_acc, initial_acc=result.initial_test_acc,
                history=[r.test_acc for r in result.history], counters=result.counters())


def margin_cell(model, bundle, sparsity: float) -> dict:
    """How far one lr-0.1 step moves the scores at the start (magnitude mask, BatchNorm re-estimated, the first
    256 training samples): quantiles of |0.1 g w|, the share above the flat start's 0.01 margin, and the move
    relative to |w| (the |w| start's scale)."""
    model = copy.deepcopy(model)
    space = SearchSpace(model, except_last(model))
    space.set_mask(magnitude_mask(space.arena, layer_budgets(space.arena, sparsity)))
    training.reestimate_batchnorm(model, bundle.train)
    model.train()
    x, y = bundle.train.tensors
    F.cross_entropy(model(x[:256]), y[:256]).backward()
    move = 0.1 * space.score_grad().abs().double()
    relative = move / space.arena.weights.abs().double().clamp_min(1e-12)
    return dict(move_median=move.quantile(0.5).item(), move_p99=move.quantile(0.99).item(),
                above_margin=(move > 0.01).double().mean().item(), relative_median=relative.quantile(0.5).item(),
                relative_p99=relative.quantile(0.99).item())


def plan(seeds: int) -> list[tuple[str, tuple, dict | None]]:
    """Every cell: (key, (data, arch, width, sparsity, seed), search settings or None for a baseline)."""
    cells = []
    for data, arch, width, sparsity in PROTOCOL:
        for seed in range(seeds):
            where = (data, arch, width, sparsity, seed)
            base = f"{config_name(data, arch, width, sparsity)}/seed{seed}"
            cells += [(f"{base}/{name}", where, None) for name in ("dense", "magnitude", "magnitude+bn")]
            for preset in PRESETS:
                cells += [(f"{base}/{preset}/{e}", where, dict(preset=preset, epochs=e, monitor=True))
                          for e in EPOCHS]
            cells += [(f"{base}/start/{init}", where, dict(init=init, epochs=ABLATION_EPOCHS))
                      for init in ("magnitude", "random")]
            cells.append((f"{base}/restriction/none", where, dict(restriction="none", epochs=10, monitor=True)))
        if (data, arch, width, sparsity) in PROBED:
            base = f"{config_name(data, arch, width, sparsity)}/seed0"
            cells.append((f"{base}/margins", (data, arch, width, sparsity, 0), None))
            cells += [(f"{base}/probe/{label}", (data, arch, width, sparsity, 0),
                       dict(epochs=3, seed=100, **settings)) for label, settings in PROBES.items()]
    return cells


def collect(cells: Cells, cache: Path, seeds: int) -> None:
    todo = plan(seeds)
    loaded: dict[tuple, tuple] = {}
    bar = tqdm(todo, desc="jackpot experiment", unit="cell", dynamic_ncols=True)
    for key, (data, arch, width, sparsity, seed), settings in bar:
        bar.set_postfix_str(key, refresh=False)
        if key in cells.cells:
            continue
        if (data, arch, width, seed) not in loaded:
            loaded.clear()
            loaded[data, arch, width, seed] = pretrained(data, arch, width, seed, cache)
        bundle, model, train_seconds = loaded[data, arch, width, seed]
        name = key.rsplit("/", 1)[-1]
        if settings is not None:
            cells.get(key, lambda: search_cell(model, bundle, sparsity=sparsity, **{"seed": seed, **settings}))
        elif name == "dense":
            cells.get(key, lambda: dict(acc=training.evaluate(model, bundle.test)[1], train_seconds=train_seconds))
        elif name in ("magnitude", "magnitude+bn"):
            cells.get(key, lambda: magnitude_cell(model, bundle, sparsity, reestimate=name == "magnitude+bn"))
        else:
            cells.get(key, lambda: margin_cell(model, bundle, sparsity))


# ---------------------------------------------------------------------------------------------
# report


def pct(values: list[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def first_within(history: list[float], target: float) -> int | None:
    """1-based epoch at which the test accuracy first reaches `target`, or None."""
    return next((i + 1 for i, acc in enumerate(history) if acc >= target), None)


def summarize(cells: dict, seeds: int) -> dict:
    """Per configuration, the per-seed values of every row (the JSON written next to the table)."""
    table = {}
    for data, arch, width, sparsity in PROTOCOL:
        config = config_name(data, arch, width, sparsity)
        cell = lambda seed, name: cells.get(f"{config}/seed{seed}/{name}")  # noqa: E731
        needed = [key for key, (d, a, w, s, _), _ in plan(seeds) if config_name(d, a, w, s) == config
                  and "/probe/" not in key and not key.endswith("/margins")]
        if any(key not in cells for key in needed):
            continue  # not finished: left out of the table (the header says so)
        row = {"data": data, "model": arch, "width": width, "sparsity": sparsity, "seeds": seeds}
        row["dense"] = [cell(s, "dense")["acc"] for s in range(seeds)]
        for name in ("magnitude", "magnitude+bn"):
            row[name] = [cell(s, name)["acc"] for s in range(seeds)]
        for preset in PRESETS:
            for e in EPOCHS:
                row[f"{preset}/{e}"] = [cell(s, f"{preset}/{e}")["acc"] for s in range(seeds)]
        for init in ("magnitude", "random"):
            runs = [cell(s, f"start/{init}") for s in range(seeds)]
            row[f"start/{init}"] = {
                "epochs_to_dense_minus_1": [first_within(r["history"], d - 0.01) for r, d in zip(runs, row["dense"])],
                "initial": [r["initial_acc"] for r in runs], "final": [r["acc"] for r in runs],
                "history": [r["history"] for r in runs]}
        for restriction, name in (("short", "safe/10"), ("none", "restriction/none")):
            runs = [cell(s, name) for s in range(seeds)]
            row[f"restriction/{restriction}"] = {
                "acc": [r["acc"] for r in runs],
                **{k: sum(r["counters"][k] for r in runs) for k in ("proposed", "admitted", "updates", "rises")}}
        table[config] = row
    return table


def markdown(table: dict, seeds: int, seconds: float, command: str, missing: int, cells: dict) -> str:
    cols = " | ".join(f"{p} {e} ep" for p in PRESETS for e in EPOCHS)
    ran = (f"all {len(PROTOCOL)} protocol configurations" if len(table) == len(PROTOCOL)
           else f"{len(table)} of {len(PROTOCOL)} protocol configurations ({missing} cells not run)")
    lines = [
        "# Lottery jackpots in pre-trained MNIST-1D and digits CNNs",
        "",
        f"Generated {datetime.date.today()} by `{command}` on {platform.machine()} CPU, {torch.get_num_threads()} "
        f"thread(s), torch {torch.__version__}; {seconds / 60:.1f} min of compute. What ran: {ran}, {seeds} "
        f"seeds each (seed s trains the dense model with the recipe, splits digits and orders the search "
        f"batches); every number is mean ± std over the seeds.",
        "",
        "Search: scores only, pre-trained weights frozen (bitwise), batch 256, SGD momentum 0.9, weight decay "
        "5e-4, per-layer budgets from one global magnitude threshold, classifier dense. *safe* preset (the "
        "default): scores start at |w|, BatchNorm statistics re-estimated for the start mask, lr 0.1 with a "
        "per-step cosine, short restriction. *authors* preset: flat start (1 kept / 0.99 pruned), lr 0.1 with "
        "a per-epoch cosine, no BatchNorm pass, plain top-k refresh, as in the authors' code. Each epoch budget "
        "is its own run. Test accuracy in %.",
        "",
        "## Accuracy without any weight update",
        "",
        f"| data / model | sparsity | dense | magnitude | magnitude + BN | {cols} |",
        "|---|---|---|---|---|" + "---|" * (len(PRESETS) * len(EPOCHS)),
    ]
    for row in table.values():
        searched = " | ".join(pct(row[f"{p}/{e}"]) for p in PRESETS for e in EPOCHS)
        lines.append(f"| {row['data']} / {row['model']} w{row['width']:g} | {row['sparsity']:.0%} | "
                     f"{pct(row['dense'])} | {pct(row['magnitude'])} | {pct(row['magnitude+bn'])} | {searched} |")
    lines += ["", "'magnitude + BN': the magnitude mask with BatchNorm running statistics re-estimated on the "
              "training set (one pass, no weight update), the baseline the search must beat (cnn1d has no "
              "BatchNorm, so there it equals magnitude).", "",
              "Target: within 1 point of dense (mean of the seeds) without any weight update within 10 epochs.", ""]
    for row in table.values():
        dense = statistics.mean(row["dense"])
        best_e = max(EPOCHS, key=lambda e: statistics.mean(row[f"safe/{e}"]))
        best = statistics.mean(row[f"safe/{best_e}"])
        gap = 100 * (dense - best)
        lines.append(f"- {row['data']} / {row['model']} w{row['width']:g} at {row['sparsity']:.0%}: best safe "
                     f"mean {100 * best:.1f} after {best_e} epochs vs dense {100 * dense:.1f}: {gap:.1f} points "
                     f"below, {'reached' if gap <= 1.0 else 'not reached'}.")
    lines += ["", f"## Start ablation (safe preset, {ABLATION_EPOCHS} epochs)", "",
              "Epochs until the test accuracy first comes within 1 point of the seed's dense accuracy (per seed; "
              "'-' = not within the run), the accuracy at the start (after the BatchNorm re-estimation) and at "
              "the end.", "",
              "| data / model | sparsity | start | at start | epochs to dense - 1 pt | final |",
              "|---|---|---|---|---|---|"]
    for row in table.values():
        for init in ("magnitude", "random"):
            r = row[f"start/{init}"]
            reached = ", ".join("-" if e is None else str(e) for e in r["epochs_to_dense_minus_1"])
            lines.append(f"| {row['data']} / {row['model']} w{row['width']:g} | {row['sparsity']:.0%} | {init} | "
                         f"{pct(r['initial'])} | {reached} | {pct(r['final'])} |")
    lines += ["", "## Restriction ablation (safe preset, 10 epochs, loss monitored)", "",
              "Pairs: (revival, removal) swaps proposed by the top-k of the new scores / admitted. A *rise* is a "
              "step whose mask changed and whose loss on the same batch (re-run under the new mask, train mode, "
              "BatchNorm statistics untouched) exceeded the loss of the step's own forward under the old mask. "
              "Counts summed over seeds.", "",
              "| data / model | sparsity | restriction | accuracy | pairs proposed | admitted | mask updates | "
              "loss rises | rises / update |", "|---|---|---|---|---|---|---|---|---|"]
    for row in table.values():
        for restriction in ("short", "none"):
            r = row[f"restriction/{restriction}"]
            share = f"{r['rises'] / r['updates']:.2f}" if r["updates"] else "-"
            lines.append(f"| {row['data']} / {row['model']} w{row['width']:g} | {row['sparsity']:.0%} | "
                         f"{restriction} | {pct(r['acc'])} | {r['proposed']} | {r['admitted']} | {r['updates']} | "
                         f"{r['rises']} | {share} |")
    lines += unfinished_section(table, cells)
    lines += probe_section(cells)
    lines += ["", f"![jackpot results]({OUT.name}.png)", ""]
    return "\n".join(lines)


def unfinished_section(table: dict, cells: dict) -> list[str]:
    """The cells that did finish for the configurations left out of the tables (single runs, not means)."""
    lines = []
    for data, arch, width, sparsity in PROTOCOL:
        config = config_name(data, arch, width, sparsity)
        if config in table:
            continue
        done = {key[len(config) + 1:]: value for key, value in cells.items() if key.startswith(config + "/")}
        if not done:
            lines.append(f"- {data} / {arch} w{width:g} at {sparsity:.0%}: not run.")
            continue
        values = ", ".join(f"{key} {100 * value['acc']:.1f}" for key, value in done.items() if "acc" in value)
        lines.append(f"- {data} / {arch} w{width:g} at {sparsity:.0%}: not finished; single runs that did: "
                     f"{values}.")
    if lines:
        lines = ["", "## Configurations not finished (left out of the tables above)", "", *lines]
    return lines


def probe_section(cells: dict) -> list[str]:
    """The start / lr probe behind the safe preset, where it ran."""
    configs = [(config_name(d, a, w, s), f"{d} / {a} w{w:g}") for d, a, w, s in PROBED]
    configs = [(c, label) for c, label in configs if f"{c}/seed0/margins" in cells
               and all(f"{c}/seed0/probe/{p}" in cells for p in PROBES)]
    if not configs:
        return []
    lines = ["", "## Why the safe start (dense seed 0, search seed 100, 90%, 3 epochs, one run each)", "",
             "One lr-0.1 step at the start (magnitude mask, BatchNorm re-estimated, first 256 training samples): "
             "how far it moves the scores, and the share of weights it moves by more than the flat start's "
             "0.01 margin; relative: the move divided by |w| (the scale of the |w| start).", "",
             "| data / model | move median | move p99 | share above 0.01 | relative median | relative p99 |",
             "|---|---|---|---|---|---|"]
    for config, label in configs:
        m = cells[f"{config}/seed0/margins"]
        lines.append(f"| {label} | {m['move_median']:.1e} | {m['move_p99']:.1e} | {m['above_margin']:.3f} | "
                     f"{m['relative_median']:.1e} | {m['relative_p99']:.1e} |")
    lines += ["", "Test accuracy after 3 epochs (BatchNorm re-estimated in all but the authors' preset):", "",
              "| start, lr | " + " | ".join(label for _, label in configs) + " |",
              "|---|" + "---|" * len(configs)]
    for probe in PROBES:
        accs = (f"{100 * cells[f'{c}/seed0/probe/{probe}']['acc']:.1f}" for c, _ in configs)
        lines.append(f"| {probe.replace('|', chr(92) + '|')} | " + " | ".join(accs) + " |")
    return lines


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(table), 2, figsize=(11, 3.6 * len(table)), squeeze=False)
    for (grid, start), row in zip(axes, table.values()):
        title = f"{row['data']} / {row['model']} w{row['width']:g}, {row['sparsity']:.0%}"
        for preset, color in zip(PRESETS, ("C0", "C3")):
            means = [100 * statistics.mean(row[f"{preset}/{e}"]) for e in EPOCHS]
            grid.plot([0, *EPOCHS], [100 * statistics.mean(row["magnitude"]), *means], "o-", color=color,
                      label=f"jackpot, {preset} preset")
        grid.axhline(100 * statistics.mean(row["dense"]), color="k", ls="--", label="dense")
        grid.axhline(100 * statistics.mean(row["magnitude+bn"]), color="gray", ls=":", label="magnitude + BN")
        grid.set(xlabel="search epochs (0 = magnitude pruning)", ylabel="test accuracy (%)", title=title)
        grid.legend(fontsize=7)
        for init, color in (("magnitude", "C0"), ("random", "C3")):
            r = row[f"start/{init}"]
            for i, (first, history) in enumerate(zip(r["initial"], r["history"])):
                start.plot(range(len(history) + 1), [100 * first, *(100 * a for a in history)], color=color,
                           alpha=0.7, label=f"{init} start" if i == 0 else None)
        start.axhline(100 * statistics.mean(row["dense"]) - 1, color="gray", ls=":", label="dense - 1 pt")
        start.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"start ablation, {title}")
        start.legend(fontsize=7)
    save_figure(fig, path, dpi=100)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default="runs/jackpot-results", help="dense checkpoints and finished cells")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="write the report from the cells done so far")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    cells = Cells(cache / "cells.json")
    if not args.report_only:
        collect(cells, cache, args.seeds)
    table = summarize(cells.cells, args.seeds)
    if not table:
        raise SystemExit("no configuration finished yet")
    missing = sum(key not in cells.cells for key, _, _ in plan(args.seeds))
    seconds = sum(c["seconds"] + c.get("train_seconds", 0.0) for c in cells.cells.values())
    command = "nice -n 10 .venv/bin/python experiments/jackpot_results.py" + (
        f" --seeds {args.seeds}" if args.seeds != 3 else "")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    plot(table, OUT.with_suffix(".png"))
    probes = {key: value for key, value in cells.cells.items() if "/probe/" in key or key.endswith("/margins")}
    write_text(OUT.with_suffix(".json"), json.dumps({"configurations": table, "start_probe": probes}, indent=1))
    write_text(OUT.with_suffix(".md"), markdown(table, args.seeds, seconds, command, missing, cells.cells))
    print(f"wrote {OUT}.md, .json and .png")


if __name__ == "__main__":
    main()
