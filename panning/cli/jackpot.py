"""`panning jackpot`: search a lottery jackpot in a pre-trained model and report it.

    panning jackpot --data mnist1d --sparsity 0.9 --epochs 10 [--weights dense.safetensors]
    panning jackpot ... --preset authors          # the authors' settings, step for step (docs/jackpot.md)
    panning jackpot ... --steps 500               # the budget in optimizer steps instead of epochs

Without --weights the dense model is trained first with panning.train (the model's recipe) and cached in --out.
Prints a table (dense, magnitude-pruned, jackpot and optionally fine-tuned accuracy; per-layer density) and writes
masks, scores, a summary JSON and a plot into a run folder under --out. The search checkpoints every epoch and
resumes unless --no-resume. The search options left unset take panning.jackpot.SearchConfig's defaults; the
search configuration is built, and so checked, before any work. Several processes:

    torchrun --nproc_per_node=2 --no-python panning jackpot --data mnist1d --weights dense.safetensors
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from .. import checks
from . import options as o
from .options import Option, boolean

HELP = "search a lottery jackpot mask in a pre-trained network (weights unchanged)"
_SEARCH = "; default: panning.jackpot.SearchConfig's"
OPTIONS = (
    o.ANY_DATA, o.DATA_DIR, o.DATA_KWARGS, o.ANY_MODEL, o.MODEL_KWARGS, o.WIDTH,
    Option("weights", Path, "pre-trained weights: a state dict (torch or .safetensors), a panning training "
           "checkpoint or a model file of panning train --save; without it the dense model is trained first"),
    o.SPARSITY,
    o.EPOCHS.but(help="search epochs (10 unless --steps)" + _SEARCH),
    Option("steps", int, "search budget in optimizer steps instead of epochs"),
    Option("preset", str, "safe or authors (their settings step for step; docs/jackpot.md)" + _SEARCH),
    Option("init", str, "starting scores: magnitude, flat or random; default: the preset's"),
    Option("restriction", str, "short restriction or none; default: the preset's"),
    Option("bn-reestimation", boolean, "re-estimate BatchNorm statistics for the start mask; default: the preset's"),
    Option("budget", str, "per-layer budgets: global (one magnitude threshold) or uniform" + _SEARCH),
    Option("include-classifier", boolean, "search the last layer too" + _SEARCH),
    o.BATCH_SIZE.but(help="global batch size" + _SEARCH),
    o.LR.but(help="score learning rate; default: the preset's"),
    o.MOMENTUM.but(help="score SGD momentum, in [0, 1)" + _SEARCH),
    o.WEIGHT_DECAY.but(help="score weight decay" + _SEARCH),
    Option("monitor", boolean, "count loss rises after mask updates (one more forward per step)" + _SEARCH),
    Option("finetune-epochs", int, "then train the kept weights with the mask fixed (0: no fine-tune)", 0,
           check=checks.non_negative_int),
    Option("finetune-lr", float, "with --finetune-epochs: its learning rate; default: panning.jackpot.finetune's",
           check=checks.positive, requires="finetune_epochs"),
    o.SEED,
    o.DEVICE.but(default=None, help="torch device: cpu, cuda, cuda:<i>; default: cuda if available"),
    Option("out", Path, "folder for the cached dense model and the runs", Path("runs/jackpot"),
           check=o.output_folder),
    Option("resume", boolean, "continue an interrupted search from its checkpoint", True),
    o.PROGRESS, o.THREADS,
)
_SEARCH_KEYS = ("sparsity", "epochs", "steps", "preset", "init", "restriction", "bn_reestimation", "budget",
                "include_classifier", "batch_size", "lr", "momentum", "weight_decay", "monitor", "seed")


def resume_hint(opts: dict) -> str:
    how = "run the same command again" if opts.get("resume", True) else "run it again without --no-resume"
    return f"{how} to resume the search from its checkpoint under {opts.get('out')}"


def run(opts: dict) -> int:
    """Search, print the table, write the run folder."""
    import torch.distributed as dist

    from .. import models
    from ..arena import except_last, prunable
    from ..jackpot.searching import SearchConfig
    from ..sparsity import kept_weights

    config = SearchConfig(**{key: opts[key] for key in _SEARCH_KEYS if opts[key] is not None})  # before any work
    opts = opts | {key: getattr(config, key) for key in _SEARCH_KEYS}  # the report shows the defaults it ran with
    opts["model"] = o.model_for(opts)
    if opts["weights"] is None and not o.own_model(opts):  # before loading anything
        raise o.UsageError(f"--weights: required for --model {opts['model']}: panning has no recipe to train it "
                           f"first (train it with panning train --model {opts['model']} --epochs N --save FILE)")
    bundle = o.load_data(opts)
    model = o.build_model(opts, bundle)
    kept_weights(model, config.sparsity, include=prunable if config.include_classifier else except_last(model),
                 name="--sparsity")
    if opts["weights"] is not None:
        models.load_weights(model, opts["weights"], name="--weights")
    rank, device, joined = _distributed(opts["device"])
    try:
        if opts["weights"] is None:
            _train_dense(model, opts, bundle, device, rank)
        return _search(model.to(device), opts, config, bundle, device, rank)
    finally:
        if joined:
            dist.destroy_process_group()


def _distributed(device: str | None):
    """Join the process group when launched by torchrun: (rank, this process's device, whether we joined)."""
    import torch
    import torch.distributed as dist

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


def _train_dense(model, opts: dict, bundle, device, rank: int) -> None:
    """Train the dense model with its recipe (cached in --out, resumable), on rank 0; load it everywhere."""
    import torch.distributed as dist

    from .. import models
    from ..train import RECIPES, train

    cache = Path(opts["out"]) / (f"dense-{o.label(opts['data'])}-{opts['model']}-w{opts['width']:g}-"
                                 f"seed{opts['seed']}.pt")
    if rank == 0:
        train(model, bundle, **RECIPES[opts["model"]], device=device, seed=opts["seed"], checkpoint=cache,
              progress=opts["progress"])
    if dist.is_initialized():
        dist.barrier()
    models.load_weights(model, cache)


def _run_name(opts: dict, config, world: int) -> str:
    """The run folder's name: every setting that changes the search (two runs differing in any of them must
    not share a checkpoint), including the pre-trained weights (the first 12 hex digits of the SHA-256 of
    --weights; without it the dense model the name's other settings train) and the number of processes."""
    from ..io import file_digest
    from ..jackpot.searching import EPOCHS

    settings = config.settings
    classifier = "-withfc" if config.include_classifier else ""
    budget = f"steps{config.steps}" if config.steps is not None else f"e{config.epochs or EPOCHS}"
    bn = "bn" if settings["bn_reestimation"] else "nobn"
    weights = f"-from{file_digest(opts['weights'])[:12]}" if opts["weights"] is not None else ""
    processes = f"-np{world}" if world > 1 else ""
    return (f"{o.label(opts['data'])}-{o.label(opts['model'])}-w{opts['width']:g}-s{config.sparsity:g}-{budget}-"
            f"{config.preset}-{settings['init']}-{settings['restriction']}-{bn}-lr{settings['lr']:g}-"
            f"m{config.momentum:g}-wd{config.weight_decay:g}-b{config.batch_size}-{config.budget}{classifier}-"
            f"seed{config.seed}{o.kwargs_label(opts)}{weights}{processes}")


def _search(model, opts: dict, config, bundle, device, rank: int) -> int:
    import torch.distributed as dist

    from ..config import ConfigError
    from ..io import WriteError, write_text
    from ..jackpot.budget import magnitude_baseline
    from ..jackpot.finetune import finetune
    from ..jackpot.searching import search
    from ..train import evaluate
    from . import jackpot_report as report

    dense_acc = evaluate(model, bundle.test, device=device)[1]
    settings = config.settings
    magnitude, magnitude_acc, bn_acc = magnitude_baseline(
        model, bundle, config.sparsity, batch_size=config.batch_size, device=device, budget=config.budget,
        rounding=settings["rounding"], include_classifier=config.include_classifier)
    magnitude_bn_acc = magnitude_acc if bn_acc is None else bn_acc
    world = dist.get_world_size() if dist.is_initialized() else 1
    run_dir = Path(opts["out"]) / _run_name(opts, config, world)
    try:
        result = search(model, bundle, config, checkpoint=run_dir / "search.pt", resume=opts["resume"],
                        progress=opts["progress"])
    except ConfigError as error:  # the run folder's checkpoint is of another run
        if error.field != "checkpoint":
            raise
        raise o.UsageError(f"--out: the run folder's checkpoint {error.reason}; give another --out, or --no-resume "
                           "to start this search afresh there") from None
    summary = dict(data=opts["data"], model=opts["model"], sparsity=config.sparsity, epochs=config.epochs,
                   steps=result.steps, preset=config.preset, **result.settings, budget=config.budget,
                   include_classifier=config.include_classifier, batch_size=config.batch_size,
                   momentum=config.momentum, weight_decay=config.weight_decay, seed=config.seed,
                   dense_acc=dense_acc, magnitude_acc=magnitude_acc, magnitude_bn_acc=magnitude_bn_acc,
                   jackpot_acc=result.history[-1].test_acc,
                   overlap_with_magnitude=result.masks.overlap(magnitude), counters=result.counters(),
                   budgets=result.budgets, history=[asdict(r) for r in result.history])
    if opts["finetune_epochs"] and rank == 0:  # panning.train is single-process: one rank fine-tunes
        tuning = {"lr": opts["finetune_lr"]} if opts["finetune_lr"] is not None else {}
        plain, outcome = finetune(result, bundle, epochs=opts["finetune_epochs"], momentum=config.momentum,
                                  batch_size=config.batch_size, seed=config.seed,
                                  checkpoint=run_dir / "finetune.pt", resume=opts["resume"],
                                  progress=opts["progress"], **tuning)
        summary["finetuned_acc"] = outcome.test_acc
    else:
        plain = result.model
    if rank == 0:
        try:
            result.save(run_dir, **o.made_for(opts, opts["model"], bundle))
            write_text(run_dir / "summary.json", json.dumps(summary, indent=1))
            report.plot(run_dir / "search.png", opts, summary, result)
        except WriteError as error:
            raise WriteError(f"{error}; the finished search is in its checkpoint under {str(run_dir)!r}: run the "
                             "same command again, with space, to write its results") from None
        print(report.table(opts, summary, result, plain))
        print(f"wrote {run_dir}/ (masks.safetensors, scores.safetensors, summary.json, search.png)")
    return 0
