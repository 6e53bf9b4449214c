"""`panning prune`: prune a freshly initialized model before training, report, save the masks, optionally train.

    panning prune --data mnist1d --model cnn1d --method panning --sparsity 0.98 --out masks.safetensors --train

Options may also come from a YAML file (--config); flags given on the command line win over it.
The command is registered in panning.cli; this module holds its option table and its run function.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from .. import data as datasets
from .. import models
from ..arena import except_last, prunable
from ..commands import Option, boolean
from .prune import prune
from .collapse import CollapseReport, report
from .methods import METHODS

#: Default model for each data set.
MODEL_FOR = {"mnist1d": "cnn1d", "digits": "cnn2d", "synthetic": "mlp", "cifar10": "vgg19_bn",
             "cifar100": "vgg19_bn"}
DEFAULTS = dict(data="mnist1d", model=None, method="panning", sparsity=0.9, seed=0, width=1.0,
                out=Path("masks.safetensors"), train=False, device="cpu", keep_classifier=False)
OPTIONS = (
    Option("data", str, f"data set (default {DEFAULTS['data']})", datasets.available()),
    Option("data-dir", Path, "folder of the CIFAR python pickles"),
    Option("model", str, "model (default: cnn1d for mnist1d, cnn2d for digits, ...)", models.available()),
    Option("method", str, f"pruning method (default {DEFAULTS['method']})", tuple(METHODS)),
    Option("sparsity", float, f"fraction of prunable weights to remove (default {DEFAULTS['sparsity']})"),
    Option("seed", int, "seed of the initialization, the batches and the training (default 0)"),
    Option("iterations", int, "steps of the iterative methods (default 100)"),
    Option("agent", Path, "rl_panning: path of a trained agent (panning.pbt.agent.save_agent)"),
    Option("per-class", int, "samples per class in each pruning batch (default 10)"),
    Option("width", float, "model width multiplier (default 1.0)"),
    Option("out", Path, f"where to save the masks (safetensors; default {DEFAULTS['out']})"),
    Option("train", boolean, "then train the pruned network and print test accuracy"),
    Option("epochs", int, "training epochs (default: the model's recipe, panning.train.RECIPES)"),
    Option("device", str, "torch device (default cpu)"),
    Option("keep-classifier", boolean, "leave the last layer dense"),
    Option("threads", int, "CPU threads for torch (default: torch's choice; 1 is best on a busy machine)"),
)


def run(opts: dict) -> int:
    """Prune, print per-layer density and effective sparsity, save the masks; with --train, train and test."""
    opts = {option.dest: None for option in OPTIONS} | opts
    try:
        return _run(opts)
    except (ValueError, TypeError, OSError) as error:
        print(f"panning prune: error: {error}", file=sys.stderr)
        return 2


def _run(opts: dict) -> int:
    if opts["threads"] is not None:
        if isinstance(opts["threads"], bool) or not isinstance(opts["threads"], int) or opts["threads"] < 1:
            raise ValueError(f"threads: expected a positive int, got {opts['threads']!r}")
        torch.set_num_threads(opts["threads"])
    bundle = datasets.load(opts["data"], seed=opts["seed"], data_dir=opts["data_dir"])
    model_name = opts["model"] or MODEL_FOR[opts["data"]]
    torch.manual_seed(opts["seed"])
    model = models.build(model_name, bundle.input_shape, bundle.num_classes, width=opts["width"]).to(opts["device"])
    method_options = {key: opts[key] for key in ("iterations", "per_class", "agent") if opts[key] is not None}
    include = except_last(model) if opts["keep_classifier"] else prunable
    started = time.perf_counter()
    masks = prune(model, opts["method"], opts["sparsity"], bundle, seed=opts["seed"], include=include,
                  progress=sys.stderr.isatty(), **method_options)
    seconds = time.perf_counter() - started
    result = report(model, masks, bundle.input_shape)
    print(f"{opts['method']} on {model_name} / {bundle.name}, seed {opts['seed']}: pruned in {seconds:.2f} s")
    print(format_report(result, {name: m.numel() for name, m in masks.items()}))
    masks.save(opts["out"])
    print(f"masks saved to {opts['out']}")
    if opts["train"]:
        from ..train import RECIPES, train
        recipe = dict(RECIPES[model_name])
        if opts["epochs"] is not None:
            recipe["epochs"] = opts["epochs"]
        trained = train(model, bundle, masks=masks, device=opts["device"], seed=opts["seed"],
                        progress=sys.stderr.isatty(), **recipe)
        print(f"test accuracy after {trained.epochs} epochs: {trained.test_acc:.2%} "
              f"(trained in {trained.wall_time:.1f} s)")
    return 0


def format_report(result: CollapseReport, sizes: dict[str, int]) -> str:
    """A per-layer table (weights, density, effective density) and the totals."""
    width = max(len("layer"), *(len(name) for name in sizes))
    lines = [f"{'layer':<{width}}  {'weights':>9}  {'density':>8}  {'effective':>9}"]
    for name, size in sizes.items():
        density, effective = result.density[name], result.effective_density[name]
        lines.append(f"{name:<{width}}  {size:>9}  {density:>8.4f}  {effective:>9.4f}")
    lines.append(f"sparsity {result.sparsity:.4f}, effective sparsity {result.effective_sparsity:.4f}, "
                 f"collapsed layers: {', '.join(result.collapsed) or 'none'}")
    return "\n".join(lines)
