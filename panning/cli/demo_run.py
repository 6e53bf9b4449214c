"""What `panning demo` runs: both jobs of the library in small, on MNIST-1D and the protocol model, resumable.

1. Pruning before training. The dense cnn1d (width 4, the pruning-before-training protocol of
   experiments/pbt_results.py) is trained with the protocol's recipe; from the same initialization, Panning,
   RL Panning (with the agent the package ships) and the reference criteria prune it to one high sparsity, and
   each pruned network is trained with the same recipe.
2. Lottery jackpot. Inside the trained dense network, without any weight update: magnitude pruning, magnitude
   pruning with BatchNorm statistics re-estimated, and the jackpot search (panning.jackpot.search, safe preset).

Every piece of work is a *cell* (the dense training, one method, the jackpot) whose result is one JSON file in
`OUT/cells/`, written atomically when the cell is finished; a rerun with the same settings reuses it, so an
interrupted demo resumes where it stopped (the dense training and the jackpot search also checkpoint inside the
cell). At the end one table is printed and `OUT/report.md`, `OUT/results.json` and three PNG plots are written.
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from .. import data as datasets, models
from ..arena import except_last
from ..config import ConfigError
from ..connectivity import effective_sparsity
from ..io import save_figure, write_text
from ..jackpot import SearchConfig, magnitude_baseline, search
from ..masks import Masks
from ..pbt.entry import prune
from ..pbt.methods import METHODS, PruneConfig
from ..pbt.rl.agent import AGENTS, agent_differences, agent_digest, agent_file
from ..sparsity import kept_weights
from ..train import PROTOCOL, Recipe, evaluate, train
from .options import UsageError, agent_fits

DATA = "mnist1d"
#: The pruning-before-training protocol on MNIST-1D (panning.train.PROTOCOL): cnn1d width 4 and its training
#: recipe, at the dense plateau.
MODEL, WIDTH, RECIPE = (PROTOCOL[DATA][key] for key in ("model", "width", "recipe"))
#: Budgets of a full run and of --quick (the options a user leaves unset): training epochs, steps of the
#: iterative methods (100 as in the SynFlow and Panning papers), jackpot search epochs (the search's default 10).
BUDGETS = {"full": dict(epochs=RECIPE["epochs"], iterations=100, jackpot_epochs=10),
           "quick": dict(epochs=3, iterations=20, jackpot_epochs=2)}
#: The agent shipped with the package for this network.
SHIPPED_AGENT = AGENTS / f"{MODEL}-w{WIDTH:g}-{DATA}"
NAMES = {"dense": "dense", "panning": "Panning", "rl_panning": "RL Panning", "synflow": "SynFlow", "snip": "SNIP",
         "grasp": "GraSP", "iterative_snip": "iterative SNIP", "force": "FORCE", "magnitude": "magnitude",
         "random": "random"}
PLOTS = ("accuracy.png", "training.png", "jackpot.png")


def run(opts: dict, out=None) -> int:
    """The demo with the checked options of `panning demo` (panning.cli.demo): cells, table, report, plots."""
    started = time.perf_counter()
    out = out if out is not None else sys.stdout
    budget = BUDGETS["quick" if opts["quick"] else "full"]
    opts = opts | {key: budget[key] if opts.get(key) is None else opts[key] for key in budget}
    recipe = RECIPE | {"epochs": opts["epochs"]}
    training, searching = Recipe(**recipe, seed=opts["seed"]), _search_config(opts)  # checked before any work
    folder = Path(opts["out"])
    bundle = datasets.load(DATA)
    model = _built(opts, bundle)  # --width checked by models.build, before the agent is compared with it
    agent, agent_note = _agent(opts)  # may refuse an --agent that does not fit, before any work
    opts["agent"] = agent
    pruning = {method: _prune_config(opts, method) for method in opts["methods"]  # --sparsity, --iterations
               if method != "rl_panning" or agent is not None}
    # sparsities that keep no weight are refused before any work
    kept_weights(model, opts["sparsity"], name="--sparsity")
    kept_weights(model, opts["jackpot_sparsity"], include=except_last(model), name="--jackpot-sparsity")
    cells = Cells(folder)

    plan = ["dense", *opts["methods"], "jackpot"]
    rows: dict[str, dict] = {}
    for number, name in enumerate(plan, 1):
        _say(f"[{number}/{len(plan)}] {_title(name, opts)}")
        if name == "rl_panning" and agent is None:
            _say(f"  RL Panning skipped: {agent_note}")
            rows[name] = dict(name=name, skipped=agent_note)
            continue
        if name == "dense":
            rows[name] = cells.get("dense", dict(settings_of(opts, "dense"), recipe=recipe),
                                   lambda: _dense(opts, bundle, training, cells.checkpoint("dense", opts)))
        elif name == "jackpot":
            rows[name] = cells.get("jackpot", settings_of(opts, "jackpot"),
                                   lambda: _jackpot(opts, bundle, searching, cells))
        else:
            rows[name] = cells.get(name, dict(settings_of(opts, name), recipe=recipe),
                                   lambda: _pruned(opts, bundle, training, pruning[name], folder))
        if rows[name].get("reused"):
            _say("  finished in an earlier run: reused")

    table = table_rows(rows, plan)
    _print(table, opts, out)
    seconds = time.perf_counter() - started
    write_text(folder / "results.json", json.dumps(dict(options=_plain(opts), rows=table,
                                                        cells=rows), indent=1))
    _plots(folder, rows, table, opts)
    write_text(folder / "report.md", report(table, rows, opts, seconds))
    print(f"wrote {folder}/: report.md, results.json, {', '.join(PLOTS)}, cells/, masks/ ({seconds:.0f} s)",
          file=out)
    return 0


# -- cells ---------------------------------------------------------------------------------------------------


class Cells:
    """The finished cells of a demo folder: `get(name, settings, compute)` returns the cell's record from
    `cells/NAME.json` when it was finished with the same settings, else computes it and writes the file."""

    def __init__(self, folder: Path):
        self.folder = folder

    def get(self, name: str, settings: dict, compute: Callable[[], dict]) -> dict:
        settings = json.loads(json.dumps(settings))
        path = self.folder / "cells" / f"{name}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("settings") == settings:
                return saved | {"reused": True}
        record = dict(name=name, settings=settings, **compute(),
                      finished=datetime.datetime.now(datetime.timezone.utc).isoformat())
        write_text(path, json.dumps(record, indent=1))
        return record

    def checkpoint(self, name: str, opts: dict) -> Path:
        """A checkpoint file of cell `name`, named by its settings (other settings never resume it)."""
        tag = hashlib.sha1(json.dumps(settings_of(opts, name), sort_keys=True).encode()).hexdigest()[:10]
        return self.folder / "checkpoints" / f"{name}-{tag}.pt"


def settings_of(opts: dict, name: str) -> dict:
    """Everything a cell's result depends on; a finished cell is reused only when these are equal."""
    common = dict(data=DATA, model=MODEL, width=opts["width"], seed=opts["seed"])
    if name == "dense":
        return common | dict(epochs=opts["epochs"])
    if name == "jackpot":
        return common | dict(epochs=opts["epochs"], sparsity=opts["jackpot_sparsity"],
                             search_epochs=opts["jackpot_epochs"], preset="safe")
    extra = dict(iterations=opts["iterations"]) if "iterations" in METHODS[name].defaults else {}
    if name == "rl_panning":  # a retrained agent is another cell
        extra["agent_sha256"] = agent_digest(opts["agent"])
    return common | dict(method=name, sparsity=opts["sparsity"], **extra)


def _prune_config(opts: dict, method: str) -> PruneConfig:
    """The pruning of one method at --sparsity (and --iterations, --agent where it takes them), checked as built: a
    refused field is named by its option."""
    options = {key: opts[key] for key in ("iterations", "agent") if key in METHODS[method].defaults}
    return PruneConfig(method=method, sparsity=opts["sparsity"], seed=opts["seed"], **options)


def _search_config(opts: dict) -> SearchConfig:
    """The jackpot search of --jackpot-sparsity and --jackpot-epochs; a refused field is named by its option."""
    try:
        return SearchConfig(sparsity=opts["jackpot_sparsity"], epochs=opts["jackpot_epochs"], seed=opts["seed"])
    except ConfigError as error:  # the seed is checked before, by the Recipe: the others are the jackpot's options
        raise UsageError(f"--jackpot-{error.field.replace('_', '-')}: {error.reason}") from None


def _built(opts: dict, bundle) -> torch.nn.Module:
    torch.manual_seed(opts["seed"])
    return models.build(MODEL, bundle.input_shape, bundle.num_classes, width=opts["width"])


def _dense(opts: dict, bundle, recipe: Recipe, checkpoint: Path) -> dict:
    model = _built(opts, bundle)
    trained = train(model, bundle, recipe, checkpoint=checkpoint, progress=opts["progress"])
    return dict(sparsity=0.0, effective_sparsity=0.0, test_acc=trained.test_acc, prune_seconds=0.0,
                train_seconds=trained.wall_time, curve=[h.test_acc for h in trained.history],
                checkpoint=checkpoint.name)


def _pruned(opts: dict, bundle, recipe: Recipe, config: PruneConfig, folder: Path) -> dict:
    model = _built(opts, bundle)
    started = time.perf_counter()
    masks = prune(model, config.method, config.sparsity, bundle, seed=config.seed, progress=opts["progress"],
                  **config.given)
    prune_seconds = time.perf_counter() - started
    Masks(masks, {"model": MODEL, "width": opts["width"], "data": DATA}).save(folder / "masks" /
                                                                            f"{config.method}.safetensors")
    effective = effective_sparsity(model, masks, bundle.input_shape)
    trained = train(model, bundle, recipe, masks=masks, progress=opts["progress"])
    return dict(sparsity=masks.sparsity, effective_sparsity=effective, test_acc=trained.test_acc,
                prune_seconds=prune_seconds, train_seconds=trained.wall_time,
                curve=[h.test_acc for h in trained.history])


def _jackpot(opts: dict, bundle, config: SearchConfig, cells: Cells) -> dict:
    """Magnitude, magnitude + BatchNorm re-estimation and the jackpot search in the trained dense network."""
    dense = models.load_weights(_built(opts, bundle), cells.checkpoint("dense", opts))
    dense_acc = evaluate(dense, bundle.test)[1]
    started = time.perf_counter()
    magnitude, magnitude_acc, bn_acc = magnitude_baseline(dense, bundle, config.sparsity)
    has_batchnorm = bn_acc is not None
    magnitude_bn_acc = bn_acc if has_batchnorm else magnitude_acc
    magnitude_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = search(copy.deepcopy(dense), bundle, config, checkpoint=cells.checkpoint("jackpot", opts),
                    progress=opts["progress"])
    search_seconds = time.perf_counter() - started
    result.save(cells.folder / "masks" / "jackpot")
    magnitude.save(cells.folder / "masks" / "jackpot" / "magnitude.safetensors")
    return dict(sparsity=result.masks.sparsity, dense_acc=dense_acc,
                magnitude=dict(test_acc=magnitude_acc, seconds=magnitude_seconds,
                               effective_sparsity=effective_sparsity(dense, magnitude, bundle.input_shape)),
                magnitude_bn=dict(test_acc=magnitude_bn_acc, has_batchnorm=has_batchnorm),
                jackpot=dict(test_acc=result.history[-1].test_acc, seconds=search_seconds, steps=result.steps,
                             effective_sparsity=effective_sparsity(dense, result.masks, bundle.input_shape),
                             overlap_with_magnitude=result.masks.overlap(magnitude)),
                curve=[result.initial_test_acc] + [r.test_acc for r in result.history],
                history=[asdict(r) for r in result.history])


def _agent(opts: dict) -> tuple[Path | None, str]:
    """The agent RL Panning uses, or None and the one line that says why the row is skipped. An --agent given
    explicitly must fit the network (else a usage error); the shipped one is skipped when absent or unfit."""
    if "rl_panning" not in opts["methods"]:
        return None, ""
    given = opts["agent"] is not None
    path = Path(opts["agent"]) if given else SHIPPED_AGENT
    if not given and not (agent_file(path, ".json").is_file() and agent_file(path, ".safetensors").is_file()):
        return None, f"no agent at {_shown(path)}.{{json,safetensors}} (train one: panning agent --config " \
                     "configs/agent_mnist1d_cnn1d.yaml)"
    if given:
        agent_fits("--agent", path, model=MODEL, width=opts["width"], data=DATA)
        return path, ""
    differs = agent_differences(path, model=MODEL, width=opts["width"], data=DATA)
    if differs:
        return None, f"the agent {_shown(path)} was trained for another network: {'; '.join(differs)}"
    return path, ""


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _title(name: str, opts: dict) -> str:
    if name == "dense":
        return f"dense {MODEL} width {opts['width']:g}: train {opts['epochs']} epochs"
    if name == "jackpot":
        return (f"lottery jackpot at {opts['jackpot_sparsity']:.0%} in the trained dense network (no weight "
                f"update): magnitude, + BatchNorm re-estimation, search {opts['jackpot_epochs']} epochs")
    return f"{NAMES[name]}: prune to {opts['sparsity']:.1%} before training, then train {opts['epochs']} epochs"


def _say(line: str) -> None:
    """Progress lines go to stderr, with the bars; stdout carries the table."""
    print(line, file=sys.stderr, flush=True)


def _plain(opts: dict) -> dict:
    return {key: (str(value) if isinstance(value, Path) else ",".join(value) if isinstance(value, list) else value)
            for key, value in opts.items()}


# -- the table, the report, the plots ----------------------------------------------------------------------------


def table_rows(rows: dict[str, dict], plan: list[str]) -> list[dict]:
    """One row per result: label, kind, sparsity, effective sparsity, test accuracy, seconds (None: not run)."""
    table = []
    for name in plan:
        cell = rows[name]
        if name == "jackpot":
            j = cell
            effective = j["magnitude"]["effective_sparsity"]
            bn_label = "magnitude + BN re-estimation" + ("" if j["magnitude_bn"]["has_batchnorm"] else
                                                          " (no BatchNorm: = magnitude)")
            table += [
                dict(key="magnitude", label="magnitude, trained weights", kind="jackpot", sparsity=j["sparsity"],
                     effective=effective, acc=j["magnitude"]["test_acc"], seconds=j["magnitude"]["seconds"]),
                dict(key="magnitude_bn", label=bn_label, kind="jackpot", sparsity=j["sparsity"],
                     effective=effective, acc=j["magnitude_bn"]["test_acc"], seconds=None),
                dict(key="jackpot", label=f"lottery jackpot ({j['settings']['search_epochs']} epochs)",
                     kind="jackpot", sparsity=j["sparsity"], effective=j["jackpot"]["effective_sparsity"],
                     acc=j["jackpot"]["test_acc"], seconds=j["jackpot"]["seconds"])]
        elif "skipped" in cell:
            table.append(dict(key=name, label=NAMES[name], kind="before training", sparsity=None, effective=None,
                              acc=None, seconds=None, skipped=cell["skipped"]))
        else:
            table.append(dict(key=name, label=NAMES[name], kind="dense" if name == "dense" else "before training",
                              sparsity=cell["sparsity"], effective=cell["effective_sparsity"], acc=cell["test_acc"],
                              seconds=cell["prune_seconds"] + cell["train_seconds"]))
    return table


def cells_of(row: dict) -> list[str]:
    """The row's five columns as printed and as written in report.md (one formatting for both)."""
    if row.get("skipped"):
        return [row["label"], "-", "-", "skipped", "-"]
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    return [row["label"], pct(row["sparsity"]), pct(row["effective"]), f"{100 * row['acc']:.1f}%",
            "-" if row["seconds"] is None else f"{row['seconds']:.1f} s"]


COLUMNS = ("method", "sparsity", "effective sparsity", "test accuracy", "time")


def _heading(opts: dict) -> str:
    quick = " (--quick: a shortened run)" if opts["quick"] else ""
    return (f"panning demo{quick}: {DATA}, {MODEL} width {opts['width']:g}, seed {opts['seed']}; "
            f"pruned before training to {opts['sparsity']:.0%} and trained {opts['epochs']} epochs; "
            f"lottery jackpot at {opts['jackpot_sparsity']:.0%} without weight updates")


def _print(table: list[dict], opts: dict, out) -> None:
    shown = Table(title=_heading(opts))
    for column in COLUMNS:
        shown.add_column(column, justify="left" if column == "method" else "right")
    kind = None
    for row in table:
        if kind is not None and row["kind"] != kind and row["kind"] == "jackpot":
            shown.add_section()
        kind = row["kind"]
        shown.add_row(*cells_of(row))
    Console(file=out, width=140, no_color=True).print(shown)
    for row in table:
        if row.get("skipped"):
            print(f"{row['label']} skipped: {row['skipped']}", file=out)


def report(table: list[dict], rows: dict[str, dict], opts: dict, seconds: float) -> str:
    """report.md: what ran, the table, what it shows (plain sentences from the numbers), the plots."""
    reused = [name for name, cell in rows.items() if cell.get("reused")]
    lines = [f"# panning demo: pruning before training and a lottery jackpot on {DATA}", ""]
    if opts["quick"]:
        lines += [f"**Quick run (`--quick`): {opts['epochs']} training epochs, {opts['iterations']} steps for the "
                  f"iterative methods, {opts['jackpot_epochs']} search epochs; the full demo uses "
                  f"{BUDGETS['full']['epochs']}, {BUDGETS['full']['iterations']} and "
                  f"{BUDGETS['full']['jackpot_epochs']}. The numbers below are not the protocol's.**", ""]
    lines += [
        f"Generated {datetime.date.today().isoformat()} by `panning demo` (options: {_command(opts)}) on "
        f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}; "
        "this invocation took "
        f"{seconds:.0f} s" + (f" (reused finished cells: {', '.join(reused)})" if reused else "") + ".", "",
        f"Model: {MODEL} width {opts['width']:g} on {DATA} (4000 training, 1000 test sequences), seed "
        f"{opts['seed']}: the initialization, the data order and the pruning batches. Training recipe (dense and "
        f"every pruned network): Adam lr {RECIPE['lr']:g}, batch {RECIPE['batch_size']}, weight decay "
        f"{RECIPE['weight_decay']:g}, cosine, {opts['epochs']} epochs. Pruning before training: every method "
        f"prunes the same initialization to {opts['sparsity']:.0%} of all Linear/Conv weights; the iterative "
        f"ones (Panning, RL Panning, SynFlow) take {opts['iterations']} steps. Lottery jackpot: "
        f"`panning.jackpot.search` (safe preset) at {opts['jackpot_sparsity']:.0%} of the layers before the "
        f"classifier (which stays dense, as in the paper), {opts['jackpot_epochs']} search epochs, weights "
        "never updated. Effective sparsity counts pruned weights and weights on no input-output path.", "",
        "## Results", "",
        "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(cells_of(row)) + " |" for row in table]
    lines += ["", "Time: pruning + training for the networks pruned before training; the search alone for the "
              "jackpot. One seed: differences of a few points are within the spread between seeds "
              "(docs/results.md lists the multi-seed experiments).", ""]
    lines += ["## What it shows", ""] + [f"- {s}" for s in findings(table, opts)] + [""]
    lines += ["## Plots", "", "![test accuracy of every row](accuracy.png)", "",
              "![test accuracy per training epoch](training.png)", "",
              "![jackpot search: test accuracy per search epoch](jackpot.png)", "",
              "## Files", "",
              "`cells/*.json`: one file per finished piece of work (a rerun with the same options reuses them); "
              "`masks/`: every mask (safetensors); `checkpoints/`: the dense training and the jackpot search; "
              "`results.json`: the rows of the table and every cell.", ""]
    return "\n".join(lines)


def findings(table: list[dict], opts: dict) -> list[str]:
    """Plain sentences from the table's numbers: which method leads here, by how much; the jackpot's gap."""
    by = {row["key"]: row for row in table}
    acc = lambda key: 100 * by[key]["acc"]  # noqa: E731
    sentences = []
    ran = [row for row in table if row["kind"] == "before training" and not row.get("skipped")]
    if ran:
        ranked = sorted(ran, key=lambda row: -row["acc"])
        best = ranked[0]
        order = ", ".join(f"{row['label']} {100 * row['acc']:.1f}%" for row in ranked)
        sentences.append(f"Pruned before training to {opts['sparsity']:.0%}, from most to least accurate: "
                         f"{order} (dense: {acc('dense'):.1f}%).")
        # Each comparison once: Panning and RL Panning against the best other method, then against each other.
        family = [row for row in ranked if row["key"] in ("panning", "rl_panning")]
        others = [row for row in ranked if row["key"] not in ("panning", "rl_panning")]
        if best in family and others:
            sentences.append(f"{best['label']} leads the best of the other methods, {others[0]['label']}, by "
                             f"{100 * (best['acc'] - others[0]['acc']):.1f} points at this seed.")
        elif best not in family:
            sentences += [f"{row['label']} is {100 * (best['acc'] - row['acc']):.1f} points below {best['label']} "
                          "at this seed." for row in family]
        if len(family) == 2:
            difference = 100 * (by["rl_panning"]["acc"] - by["panning"]["acc"])
            sentences.append(f"RL Panning against hand-scheduled Panning: {difference:+.1f} points at this seed.")
    if "rl_panning" in by and by["rl_panning"].get("skipped"):
        sentences.append(f"RL Panning did not run: {by['rl_panning']['skipped']}.")
    if "jackpot" in by:
        sentences.append(
            f"At {opts['jackpot_sparsity']:.0%} without any weight update: magnitude pruning of the trained "
            f"network {acc('magnitude'):.1f}%, with BatchNorm re-estimated {acc('magnitude_bn'):.1f}%, the "
            f"jackpot search {acc('jackpot'):.1f}% ({acc('dense') - acc('jackpot'):.1f} points below dense, "
            f"{acc('jackpot') - acc('magnitude_bn'):+.1f} against magnitude + BN).")
    return sentences


def _command(opts: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in _plain(opts).items() if key != "progress")


def _plots(folder: Path, rows: dict[str, dict], table: list[dict], opts: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"dense": "gray", "before training": "tab:blue", "jackpot": "tab:orange"}
    shown = [row for row in table if not row.get("skipped")]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(shown) + 1.5))
    ax.barh(range(len(shown)), [100 * row["acc"] for row in shown], color=[colors[row["kind"]] for row in shown])
    ax.set_yticks(range(len(shown)), [f"{row['label']} ({100 * row['sparsity']:.0f}%)" for row in shown],
                  fontsize=8)
    ax.invert_yaxis()
    for i, row in enumerate(shown):
        ax.text(100 * row["acc"] + 0.5, i, f"{100 * row['acc']:.1f}", va="center", fontsize=8)
    ax.set(xlabel="test accuracy (%)", xlim=(0, 105))
    # Over the whole figure, not the axes: the long row labels push the axes right, and a title centred on
    # them ran off the image's right edge.
    fig.suptitle(f"{DATA}, {MODEL} width {opts['width']:g}\nblue: pruned before training, then trained; orange: "
                 "inside the trained network, no update", fontsize=9)
    save_figure(fig, folder / "accuracy.png")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, cell in rows.items():
        if "curve" in cell and name != "jackpot":
            ax.plot(range(1, len(cell["curve"]) + 1), [100 * a for a in cell["curve"]], "o-", ms=3,
                    label=NAMES[name], color="black" if name == "dense" else None)
    ax.set(xlabel="training epoch", ylabel="test accuracy (%)",
           title=f"training after pruning to {opts['sparsity']:.0%} (and dense)")
    ax.legend(fontsize=8)
    save_figure(fig, folder / "training.png")

    jackpot = rows.get("jackpot")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if jackpot is not None:
        ax.plot(range(len(jackpot["curve"])), [100 * a for a in jackpot["curve"]], "o-", label="jackpot search")
        ax.axhline(100 * jackpot["dense_acc"], color="k", ls="--", label="dense")
        ax.axhline(100 * jackpot["magnitude"]["test_acc"], color="gray", ls=":", label="magnitude")
        ax.axhline(100 * jackpot["magnitude_bn"]["test_acc"], color="tab:green", ls="-.",
                   label="magnitude + BN re-estimation")
        ax.legend(fontsize=8)
    ax.set(xlabel="search epoch (0: the start mask)", ylabel="test accuracy (%)",
           title=f"lottery jackpot at {opts['jackpot_sparsity']:.0%}, weights never updated")
    save_figure(fig, folder / "jackpot.png")

