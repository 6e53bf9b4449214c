"""Pruning before training on MNIST-1D and digits: every method on the Panning paper's sparsity grid.

For each run (data set, row, sparsity, seed) a freshly initialized network (torch.manual_seed(seed)) is
pruned with `panning.prune(..., seed=seed)`, measured (effective sparsity, collapsed layers, pruning time)
and trained with the data set's recipe (masks held at zero); its final test accuracy is recorded. Each
run is one JSON file under --runs (written atomically); a run whose file exists with the same settings is
skipped, so an interrupted invocation resumes where it stopped. Runs go seed by seed (both data sets, the
main grid then the ablation), so a cut-short invocation leaves whole seeds.
At the end the script writes experiments/results/pbt-mnist1d-digits.{md,png,json} from every run present. The
committed JSON is the durable record: its runs count as done (when their settings are current) even where the
runs folder is empty, e.g. on a fresh clone, so a new row runs alone.

RL Panning runs on mnist1d only, with the shipped agent (panning/pbt/rl/agents/cnn1d-w4-mnist1d, trained on this
protocol's network); its runs are redone when the agent file changes (its digest is part of the settings).

    OMP_NUM_THREADS=1 nice -n 10 python experiments/pbt_results.py            # the full protocol
    python experiments/pbt_results.py --seeds 1 --ablation-seeds 1            # what fits a smaller budget
    python experiments/pbt_results.py --report-only                           # table and plot from the runs
See docs/pbt.md.
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
from tqdm import tqdm

from panning import data as datasets, models, prune
from panning.connectivity import collapse_report
from panning.io import save_figure, write_text
from panning.pbt.rl.agent import agent_digest
from panning.train import PROTOCOL, train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
STEM = "pbt-mnist1d-digits"

#: data set -> model, width and training recipe: the protocol of panning.train.PROTOCOL.
SETUPS = PROTOCOL
SPARSITIES = (0.9, 0.95, 0.98, 0.99, 0.995)
#: Rows: label -> (method, options). Every iterative method takes 100 steps, as in the SynFlow and Panning
#: papers; data-dependent methods draw 10 samples per class per batch (the default).
ROWS = {
    "panning": ("panning", {"iterations": 100}),
    "synflow": ("synflow", {"iterations": 100}),
    "snip": ("snip", {}),
    "grasp": ("grasp", {}),
    "iterative_snip": ("iterative_snip", {"iterations": 100}),
    "force": ("force", {"iterations": 100}),
    "magnitude": ("magnitude", {}),
    "random": ("random", {}),
    "rl_panning": ("rl_panning", {"iterations": 100, "agent": "panning/pbt/rl/agents/cnn1d-w4-mnist1d"}),
}
#: Rows that run on some data sets only (label -> data sets): the agent was trained on mnist1d's network.
ONLY = {"rl_panning": ("mnist1d",)}
#: The single-shot and iterative criteria, for "the best single criterion" of the RL Panning verdicts.
SINGLE = ("synflow", "snip", "grasp", "iterative_snip", "force", "magnitude", "random")
#: The ablation: the index fix (the first version's non-negative indices) and 20 vs 100 steps.
ABLATION = {
    "panning, nonnegative indices": ("panning", {"iterations": 100, "indices": "nonnegative"}),
    "panning, 20 steps": ("panning", {"iterations": 20}),
}


def rows(data: str) -> list[str]:
    """The main grid's rows on `data`."""
    return [label for label in ROWS if data in ONLY.get(label, (data,))]


def settings(data: str, label: str) -> dict:
    """Everything a run's result depends on besides its key; a run file is reused only if these match."""
    method, options = {**ROWS, **ABLATION}.get(label, ("dense", {}))
    setup = SETUPS[data]
    found = dict(model=setup["model"], width=setup["width"], recipe=setup["recipe"], method=method, options=options)
    if "agent" in options:
        found["agent_sha256"] = agent_digest(ROOT / options["agent"])
    return found


def run(bundle, data: str, label: str, sparsity: float, seed: int) -> dict:
    """Prune, measure, train and test one run; label "dense" (sparsity 0) trains the dense network."""
    cell = settings(data, label)
    torch.manual_seed(seed)
    model = models.build(cell["model"], bundle.input_shape, bundle.num_classes, width=cell["width"])
    masks, measured, prune_seconds = None, None, 0.0
    if label != "dense":
        started = time.perf_counter()
        options = dict(cell["options"])
        if "agent" in options:
            options["agent"] = ROOT / options["agent"]
        masks = prune(model, cell["method"], sparsity, bundle, seed=seed, **options)
        prune_seconds = time.perf_counter() - started
        measured = collapse_report(model, masks, bundle.input_shape)
    trained = train(model, bundle, masks=masks, seed=seed, progress=False, **cell["recipe"])
    return dict(data=data, label=label, sparsity=sparsity, seed=seed, settings=cell, test_acc=trained.test_acc,
                effective_sparsity=measured.effective_sparsity if measured else 0.0,
                collapsed=measured.collapsed if measured else [], prune_seconds=prune_seconds,
                train_seconds=trained.wall_time)


def run_path(runs: Path, data: str, label: str, sparsity: float, seed: int) -> Path:
    return runs / data / label.replace(", ", "-").replace(" ", "_") / f"s{sparsity}-seed{seed}.json"


def load_runs(runs: Path, committed: Path) -> list[dict]:
    """Every run whose settings are the current ones: the run files, then the committed record's other runs."""
    found = [json.loads(p.read_text()) for p in sorted(runs.rglob("*.json"))]
    seen = {key(r) for r in found}
    if committed.exists():
        found += [r for r in json.loads(committed.read_text())["runs"] if key(r) not in seen]
    current = {}
    for r in found:
        if r["data"] in SETUPS and r["label"] not in current.setdefault(r["data"], {}):
            current[r["data"]][r["label"]] = json.loads(json.dumps(settings(r["data"], r["label"])))
    return [r for r in found if r["data"] in SETUPS and r["settings"] == current[r["data"]][r["label"]]]


def key(run: dict) -> tuple:
    return run["data"], run["label"], run["sparsity"], run["seed"]


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)


def plan(datas: list[str], seeds: int, ablation_seeds: int) -> list[tuple[str, str, float, int]]:
    """Every run, in the order they are done: seed by seed, the main grids then the ablations of that seed."""
    todo = []
    for seed in range(max(seeds, ablation_seeds)):
        for data in datas if seed < seeds else ():
            todo.append((data, "dense", 0.0, seed))
            todo += [(data, label, s, seed) for s in SPARSITIES for label in rows(data)]
        for data in datas if seed < ablation_seeds else ():
            todo += [(data, label, s, seed) for s in SPARSITIES for label in ABLATION]
    return todo


# -- report -------------------------------------------------------------------------------------------

def summarize(runs: list[dict], data: str, label: str, sparsity: float) -> dict | None:
    found = [r for r in runs if r["data"] == data and r["label"] == label and r["sparsity"] == sparsity]
    if not found:
        return None
    accs = [100 * r["test_acc"] for r in found]
    return dict(n=len(found), mean=statistics.fmean(accs), std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                effective=100 * statistics.fmean(r["effective_sparsity"] for r in found),
                collapsed=sum(bool(r["collapsed"]) for r in found),
                seconds=statistics.fmean(r["prune_seconds"] for r in found))


def table(runs: list[dict], data: str, labels: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(f"{100 * s:g}%" for s in SPARSITIES) + " |",
             "|---|" + "---:|" * len(SPARSITIES)]
    stats = {(m, s): summarize(runs, data, m, s) for m in labels for s in SPARSITIES}
    best = {s: max((st["mean"] for m in labels if (st := stats[m, s])), default=None) for s in SPARSITIES}
    for label in labels:
        row = []
        for s in SPARSITIES:
            st = stats[label, s]
            if st is None:
                row.append("not run")
                continue
            acc = f"{st['mean']:.1f} ± {st['std']:.1f}"
            acc = f"**{acc}**" if math.isclose(st["mean"], best[s]) else acc
            extra = f", {st['collapsed']} collapsed" if st["collapsed"] else ""
            row.append(f"{acc} (n={st['n']})<br>eff {st['effective']:.2f}{extra}<br>{st['seconds']:.2f} s")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return lines


def verdicts(runs: list[dict], data: str, ours: str, others: list[str], name: str) -> list[str]:
    """Per sparsity: row `ours` (called `name`) against the best of `others`, and whether the gap exceeds the
    larger of the two stds."""
    lines = []
    for s in SPARSITIES:
        mine = summarize(runs, data, ours, s)
        found = {m: st for m in others if (st := summarize(runs, data, m, s))}
        if not mine or not found:
            continue
        other, best = max(found.items(), key=lambda item: item[1]["mean"])
        gap = mine["mean"] - best["mean"]
        if min(mine["n"], best["n"]) < 2:
            word, spread = ("above" if gap > 0 else "below"), "one seed: no spread to judge a tie"
        else:
            noise = max(mine["std"], best["std"])
            word = "ties with" if abs(gap) <= noise else ("beats" if gap > 0 else "loses to")
            spread = f"larger std {noise:.1f}"
        lines.append(f"- {100 * s:g}%: {name} {mine['mean']:.1f} {word} {other} {best['mean']:.1f} "
                     f"({gap:+.1f} points; {spread}; n={mine['n']}/{best['n']} seeds).")
    return lines


def markdown(runs: list[dict], datas: list[str], command: str, planned: int) -> str:
    done = [r for r in runs if r["data"] in datas]
    lines = [f"# Pruning before training: MNIST-1D and digits ({datetime.date.today().isoformat()})", "",
             "Test accuracy (%) after training, mean ± sample std over the seeds that ran (n), the mean effective "
             "sparsity (% of weights pruned or disconnected from input or output) and the mean pruning time "
             "(1 thread, shared machine: indicative). Best mean per column in bold. 'not run': the run did not fit "
             "the compute budget of this invocation (the script runs it given time).", "",
             "Setup: " + "; ".join(f"{d}: {s['model']} width {s['width']:g}, {s['recipe']['optimizer']} lr "
                                    f"{s['recipe']['lr']}, batch {s['recipe']['batch_size']}, {s['recipe']['epochs']} "
                                    "epochs, cosine" for d, s in SETUPS.items() if d in datas)
             + ". Iterative methods (Panning, SynFlow, iterative SNIP, FORCE) take 100 steps of the exponential "
               "schedule; batches of 10 samples per class. Panning: the authors' signed indices and stage rule, "
               "kept counts rounded (docs/pbt.md).", ""]
    for data in datas:
        setup = SETUPS[data]
        dense = summarize(runs, data, "dense", 0.0)
        lines += [f"## {data} ({setup['model']} width {setup['width']:g})", ""]
        if dense:
            lines += [f"Dense: {dense['mean']:.1f} ± {dense['std']:.1f} % (n={dense['n']}).", ""]
        labels = rows(data)
        lines += table(runs, data, labels) + ["", "Panning against the best other criterion (RL Panning aside):", ""]
        lines += verdicts(runs, data, "panning", [m for m in labels if m in SINGLE], "Panning") or ["- none yet."]
        if "rl_panning" in labels:
            lines += ["", "RL Panning (the shipped agent) against hand-scheduled Panning, then against the best "
                      "single criterion:", ""]
            lines += verdicts(runs, data, "rl_panning", ["panning"], "RL Panning") or ["- none yet."]
            lines += verdicts(runs, data, "rl_panning", list(SINGLE), "RL Panning")
        lines += ["", f"### Ablation on {data}: the index fix and the number of steps", ""]
        lines += table(runs, data, ["panning", *ABLATION]) + [""]
    total = sum(r["prune_seconds"] + r["train_seconds"] for r in done)
    for name, grid in (("main grid", {d: rows(d) for d in datas}), ("ablation", {d: list(ABLATION) for d in datas})):
        labels = {label for d in datas for label in grid[d]}
        size = sum(len(grid[d]) for d in datas) * len(SPARSITIES)
        seeds = sorted({r["seed"] for r in done if r["label"] in labels})
        counts = [len([r for r in done if r["label"] in labels and r["seed"] == seed]) for seed in seeds]
        lines.append(f"Ran, {name}: " + (", ".join(f"seed {seed}: {count} of {size} runs"
                                                    for seed, count in zip(seeds, counts)) or "nothing") + ".")
    lines += ["", f"{len(done)} of {planned} planned runs present; pruning + training time summed over them "
              f"{total / 60:.1f} min. Machine: {platform.machine()}, torch {torch.__version__}, 1 thread, shared "
              "with other jobs.", "", f"Reproduce: `{command}` (resumable: one file per run in the --runs folder, "
              "default runs/pbt/).", ""]
    return "\n".join(lines)


def plot(runs: list[dict], datas: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datas), figsize=(6.5 * len(datas), 4.8), squeeze=False)
    for ax, data in zip(axes[0], datas):
        for label in [*rows(data), *ABLATION]:
            points = [(s, st) for s in SPARSITIES if (st := summarize(runs, data, label, s))]
            if not points:
                continue
            ax.errorbar([100 * (1 - s) for s, _ in points], [st["mean"] for _, st in points],
                        yerr=[st["std"] for _, st in points], marker="o", capsize=3, label=label,
                        linewidth=2.5 if label in ("panning", "rl_panning") else 1.2,
                        linestyle=":" if label in ABLATION else "-")
        dense = summarize(runs, data, "dense", 0.0)
        if dense:
            ax.axhline(dense["mean"], color="black", linestyle="--", linewidth=1, label="dense")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xticks([100 * (1 - s) for s in SPARSITIES], [f"{100 * s:g}%" for s in SPARSITIES])
        ax.set_xlabel("sparsity")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{data} ({SETUPS[data]['model']} width {SETUPS[data]['width']:g})")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the main grid (default 3)")
    parser.add_argument("--ablation-seeds", type=int, default=3, help="seeds of the ablation (default 3)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "pbt", help="one JSON file per run")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite table and plot from the runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    todo = plan(args.data, args.seeds, args.ablation_seeds)
    if not args.report_only:
        done = {key(r) for r in load_runs(args.runs, args.out_dir / f"{STEM}.json")}
        remaining = [key for key in todo if key not in done]
        bundles = {data: datasets.load(data) for data in args.data}
        with tqdm(remaining, desc="pbt runs", file=sys.stderr) as bar:
            for data, label, sparsity, seed in bar:
                bar.set_postfix_str(f"{data} {label} {sparsity} seed {seed}")
                result = run(bundles[data], data, label, sparsity, seed)
                write_atomically(run_path(args.runs, data, label, sparsity, seed), json.dumps(result, indent=1))
    runs = load_runs(args.runs, args.out_dir / f"{STEM}.json")
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
    command = "OMP_NUM_THREADS=1 nice -n 10 python experiments/pbt_results.py " + " ".join(given)
    write_atomically(args.out_dir / f"{STEM}.md", markdown(runs, args.data, command.strip(), len(todo)))
    write_atomically(args.out_dir / f"{STEM}.json", json.dumps({"runs": runs}, indent=1))
    plot(runs, args.data, args.out_dir / f"{STEM}.png")
    print(f"wrote {args.out_dir / STEM}.md, .json and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
