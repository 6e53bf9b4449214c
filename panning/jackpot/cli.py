"""`panning jackpot`: search a lottery jackpot in a pre-trained model and report it.

    panning jackpot --data mnist1d --model cnn1d --sparsity 0.9 --epochs 10 [--checkpoint dense.pt]
    panning jackpot ... --preset authors          # the authors' settings, step for step (docs/jackpot.md)
    panning jackpot ... --steps 500               # the budget in optimizer steps instead of epochs

Without --checkpoint the dense model is trained first with panning.train (the model's recipe) and cached
in --out. Prints a table (dense, magnitude-pruned, jackpot and optionally fine-tuned accuracy; per-layer
density) and writes masks, scores, a summary JSON and a plot into a run folder under --out. The search
checkpoints every epoch and resumes unless --no-resume. Several processes:

    torchrun --nproc_per_node=2 --no-python panning jackpot --data mnist1d --model cnn1d --checkpoint dense.pt
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from .. import data as datasets
from .. import models
from ..masks import Masks
from ..commands import Option, boolean
from ..train import RECIPES, evaluate, reestimate_batchnorm, train
from .budget import BUDGETS, INITS, magnitude_masks
from .finetune import finetune
from .searching import PRESETS, RESTRICTIONS, SearchResult, resolve_settings, search

# init, lr, restriction and bn_reestimation: None = from the preset.
DEFAULTS = dict(data="mnist1d", model="cnn1d", width=1.0, sparsity=0.9, preset="safe", budget="global",
                include_classifier=False, batch_size=256, momentum=0.9, weight_decay=5e-4, monitor=True,
                finetune_epochs=0, finetune_lr=0.01, seed=0, out=Path("runs/jackpot"), resume=True, progress=True)
OPTIONS = (
    Option("data", str, "data set (default mnist1d)", datasets.available()),
    Option("data-dir", Path, "folder of the CIFAR python pickles"),
    Option("model", str, "network (default cnn1d)", models.available()),
    Option("width", float, "width multiplier of the network (default 1.0)"),
    Option("checkpoint", Path, "pre-trained weights: a state dict (torch or .safetensors) or a panning training "
           "checkpoint; without it the dense model is trained first"),
    Option("sparsity", float, "fraction of searched weights removed (default 0.9)"),
    Option("epochs", int, "search epochs (default 10 unless --steps)"),
    Option("steps", int, "search budget in optimizer steps instead of epochs"),
    Option("preset", str, "safe (default) or authors: their settings step for step", tuple(PRESETS)),
    Option("init", str, "starting scores (default: the preset's; safe: magnitude, authors: flat)", INITS),
    Option("restriction", str, "short restriction or none (default: the preset's)", RESTRICTIONS),
    Option("bn-reestimation", boolean, "re-estimate BatchNorm statistics for the start mask (default: the "
           "preset's)"),
    Option("budget", str, "per-layer budgets: one global magnitude threshold, or uniform", BUDGETS),
    Option("include-classifier", boolean, "search the last layer too"),
    Option("batch-size", int, "global batch size (default 256)"),
    Option("lr", float, "score learning rate (default: the preset's, 0.1)"),
    Option("momentum", float, "score SGD momentum (default 0.9)"),
    Option("weight-decay", float, "score weight decay (default 5e-4)"),
    Option("monitor", boolean, "count loss rises after mask updates (one more forward per step; default on)"),
    Option("finetune-epochs", int, "then train the kept weights with the mask fixed (default 0: no fine-tune)"),
    Option("finetune-lr", float, "fine-tune learning rate (default 0.01)"),
    Option("seed", int, "seed (default 0)"),
    Option("device", str, "cpu or cuda[:i] (default: cuda if available)"),
    Option("out", Path, "folder for the cached dense model and the runs (default runs/jackpot)"),
    Option("resume", boolean, "continue an interrupted search from its checkpoint (default on)"),
    Option("progress", boolean, "progress bars (default on)"),
)


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load pre-trained weights into `model`: a state dict (torch file or safetensors) or a panning training
    checkpoint (a dict with a "model" state dict). Never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint: no file at {str(path)!r}")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: {str(path)!r} holds no state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"checkpoint: {str(path)!r} does not fit the model: {error}") from None
    return model


def _distributed(device: str | None) -> tuple[int, torch.device, bool]:
    """Join the process group when launched by torchrun: (rank, this process's device, whether we joined)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    joined = world > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return rank, torch.device(device if device and ":" in device else f"cuda:{local}"), joined
    return rank, torch.device("cpu"), joined


def _pretrained(args, bundle, device: torch.device, rank: int) -> nn.Module:
    torch.manual_seed(args.seed)
    model = models.build(args.model, bundle.input_shape, bundle.num_classes, width=args.width)
    if args.checkpoint:
        return load_weights(model, args.checkpoint).to(device)
    cache = Path(args.out) / f"dense-{args.data}-{args.model}-w{args.width:g}-seed{args.seed}.pt"
    if rank == 0:
        train(model, bundle, **RECIPES[args.model], device=device, seed=args.seed,
                       checkpoint=cache, progress=args.progress)
    if dist.is_initialized():
        dist.barrier()
    return load_weights(model, cache).to(device)


def _run_name(args, settings: dict) -> str:
    """The run folder's name: every setting that changes the search (two runs differing in any of them must
    not share a checkpoint)."""
    classifier = "-withfc" if args.include_classifier else ""
    budget = f"steps{args.steps}" if args.steps is not None else f"e{args.epochs or 10}"
    bn = "bn" if settings["bn_reestimation"] else "nobn"
    return (f"{args.data}-{args.model}-w{args.width:g}-s{args.sparsity:g}-{budget}-{args.preset}-"
            f"{settings['init']}-{settings['restriction']}-{bn}-lr{settings['lr']:g}-m{args.momentum:g}-"
            f"wd{args.weight_decay:g}-b{args.batch_size}-{args.budget}{classifier}-seed{args.seed}")


def _magnitude_pruned(model: nn.Module, args, bundle, device, rounding: str) -> tuple[float, float, Masks]:
    """Test accuracy of plain magnitude pruning under the search's per-layer budgets, without and with the
    BatchNorm statistics re-estimated for the pruned network (the baseline the search must beat), and its masks."""
    masks = magnitude_masks(model, args.sparsity, budget=args.budget, rounding=rounding,
                            include_classifier=args.include_classifier)
    pruned = masks.apply(copy.deepcopy(model))
    plain = evaluate(pruned, bundle.test, device=device)[1]
    if not reestimate_batchnorm(pruned, bundle.train, args.batch_size, device):
        return plain, plain, masks
    return plain, evaluate(pruned, bundle.test, device=device)[1], masks


def _table(args, summary: dict, result: SearchResult, model: nn.Module) -> str:
    settings = result.settings
    rows = [f"jackpot: {args.data} {args.model}, sparsity {args.sparsity:.1%} ({args.preset} preset: {args.budget} "
            f"budget, {settings['init']} start, {settings['restriction']} restriction, lr {settings['lr']:g}), "
            f"{result.steps} steps in {len(result.history)} epochs",
            f"  dense accuracy             {summary['dense_acc']:.2%}",
            f"  magnitude-pruned accuracy  {summary['magnitude_acc']:.2%}",
            f"  magnitude + BN statistics  {summary['magnitude_bn_acc']:.2%}",
            f"  jackpot accuracy           {summary['jackpot_acc']:.2%}   (mask IoU with magnitude "
            f"{summary['overlap_with_magnitude']:.3f})"]
    if "finetuned_acc" in summary:
        rows.append(f"  fine-tuned accuracy        {summary['finetuned_acc']:.2%}")
    c = summary["counters"]
    rises = f"loss rose after {c['rises']} of {c['updates']} mask updates" if args.monitor else "losses not monitored"
    rows.append(f"  mask changes: {c['proposed']} pairs proposed, {c['admitted']} admitted; {rises}")
    rows.append(f"  {'layer':<28} {'weights':>9} {'kept':>9} {'density':>8}")
    searched = result.masks
    for name, p in model.named_parameters():
        if name.endswith("scores"):
            continue
        if name in searched:
            kept = int(searched[name].sum())
            rows.append(f"  {name:<28} {p.numel():>9} {kept:>9} {kept / p.numel():>8.3f}")
        elif p.dim() > 1:
            rows.append(f"  {name:<28} {p.numel():>9} {p.numel():>9} {1:>8.3f}  (dense)")
    rows.append(f"  {'searched total':<28} {searched.numel:>9} {searched.kept:>9} {1 - searched.sparsity:>8.3f}")
    return "\n".join(rows)


def _plot(path: Path, args, summary: dict, result: SearchResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, density) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [0] + [r.epoch for r in result.history]
    acc.plot(epochs, [100 * result.initial_test_acc] + [100 * r.test_acc for r in result.history], "o-",
             label="jackpot search")
    acc.axhline(100 * summary["dense_acc"], color="k", ls="--", label="dense")
    acc.axhline(100 * summary["magnitude_acc"], color="gray", ls=":", label="magnitude pruning")
    acc.set(xlabel="search epoch", ylabel="test accuracy (%)", title=f"{args.data} {args.model}, "
            f"{args.sparsity:.0%} sparse")
    acc.legend()
    names = list(result.masks)
    density.bar(range(len(names)), [float(result.masks[n].float().mean()) for n in names])
    density.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    density.set(ylabel="kept fraction", title="per-layer density")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def run(options: dict) -> int:
    """Search, print the table, write the run folder. Registered as `panning jackpot` in panning.cli."""
    args = argparse.Namespace(**({option.dest: None for option in OPTIONS} | options))
    rank, device, joined = _distributed(args.device)
    try:
        return _run(args, rank, device)
    finally:
        if joined:
            dist.destroy_process_group()


def _run(args: argparse.Namespace, rank: int, device: torch.device) -> int:
    bundle = datasets.load(args.data, seed=args.seed, data_dir=args.data_dir)
    model = _pretrained(args, bundle, device, rank)
    dense_acc = evaluate(model, bundle.test, device=device)[1]
    given = dict(init=args.init, lr=args.lr, restriction=args.restriction, bn_reestimation=args.bn_reestimation)
    settings = resolve_settings(args.preset, **given)
    magnitude_acc, magnitude_bn_acc, magnitude = _magnitude_pruned(model, args, bundle, device, settings["rounding"])
    run_dir = Path(args.out) / _run_name(args, settings)
    result = search(model, bundle, sparsity=args.sparsity, epochs=args.epochs, steps=args.steps, preset=args.preset,
                    **given, budget=args.budget, include_classifier=args.include_classifier,
                    batch_size=args.batch_size, momentum=args.momentum, weight_decay=args.weight_decay,
                    monitor=args.monitor, seed=args.seed, checkpoint=run_dir / "search.pt", resume=args.resume,
                    progress=args.progress)
    summary = dict(data=args.data, model=args.model, sparsity=args.sparsity, epochs=args.epochs, steps=result.steps,
                   preset=args.preset, **result.settings, budget=args.budget,
                   include_classifier=args.include_classifier, batch_size=args.batch_size, momentum=args.momentum,
                   weight_decay=args.weight_decay, seed=args.seed, dense_acc=dense_acc, magnitude_acc=magnitude_acc,
                   magnitude_bn_acc=magnitude_bn_acc,
                   jackpot_acc=result.history[-1].test_acc,
                   overlap_with_magnitude=result.masks.overlap(magnitude), counters=result.counters(),
                   budgets=result.budgets, history=[asdict(r) for r in result.history])
    if args.finetune_epochs and rank == 0:  # panning.train is single-process: one rank fine-tunes
        plain, outcome = finetune(result, bundle, epochs=args.finetune_epochs, lr=args.finetune_lr,
                                  momentum=args.momentum, batch_size=args.batch_size, seed=args.seed,
                                  checkpoint=run_dir / "finetune.pt", resume=args.resume,
                                  progress=args.progress)
        summary["finetuned_acc"] = outcome.test_acc
    else:
        plain = result.model
    if rank == 0:
        result.save(run_dir)
        tmp = run_dir / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, run_dir / "summary.json")
        _plot(run_dir / "search.png", args, summary, result)
        print(_table(args, summary, result, plain))
        print(f"wrote {run_dir}/ (masks.safetensors, scores.safetensors, summary.json, search.png)")
    return 0
