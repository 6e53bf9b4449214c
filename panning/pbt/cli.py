"""`panning prune`: prune a freshly initialized model before training, report, save the masks, optionally train.

    panning prune --data mnist1d --model cnn1d --method panning --sparsity 0.98 --out masks.safetensors --train

Options may also come from a YAML file (--config); flags given on the command line win over it.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import yaml

from .. import data as datasets
from .. import models
from ..arena import except_last, prunable
from ..prune import prune
from .collapse import CollapseReport, report
from .methods import METHODS

#: Default model for each data set.
MODEL_FOR = {"mnist1d": "cnn1d", "digits": "cnn2d", "synthetic": "mlp", "cifar10": "vgg19_bn",
             "cifar100": "vgg19_bn"}
DEFAULTS = dict(data="mnist1d", data_dir=None, model=None, method="panning", sparsity=0.9, seed=0, iterations=None,
                per_class=None, width=1.0, out="masks.safetensors", train=False, epochs=None, device="cpu",
                keep_classifier=False, agent=None, threads=None)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of `panning prune` to `parser` (defaults are applied in run, after --config)."""
    add = parser.add_argument
    add("--config", help="YAML file of options (keys as the long flags, with underscores); flags override it")
    add("--data", choices=datasets.available(), help=f"data set (default {DEFAULTS['data']})")
    add("--data-dir", help="folder of the CIFAR python pickles")
    add("--model", choices=models.available(), help="model (default: cnn1d for mnist1d, cnn2d for digits, ...)")
    add("--method", choices=list(METHODS), help=f"pruning method (default {DEFAULTS['method']})")
    add("--sparsity", type=float, help=f"fraction of prunable weights to remove (default {DEFAULTS['sparsity']})")
    add("--seed", type=int, help="seed of the initialization, the batches and the training (default 0)")
    add("--iterations", type=int, help="steps of the iterative methods (default 100)")
    add("--agent", help="rl_panning: path of a trained agent (panning.pbt.agent.save_agent)")
    add("--per-class", type=int, help="samples per class in each pruning batch (default 10)")
    add("--width", type=float, help="model width multiplier (default 1.0)")
    add("--out", help=f"where to save the masks (safetensors; default {DEFAULTS['out']})")
    add("--train", action="store_true", default=None, help="then train the pruned network and print test accuracy")
    add("--epochs", type=int, help="training epochs (default: the model's recipe, panning.train.RECIPES)")
    add("--device", help="torch device (default cpu)")
    add("--keep-classifier", action="store_true", default=None, help="leave the last layer dense")
    add("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is best on a busy machine)")


def options(args: argparse.Namespace) -> dict:
    """DEFAULTS, then the --config file, then the flags given."""
    values = dict(DEFAULTS)
    if getattr(args, "config", None):
        with open(args.config) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--config: {args.config} must hold a mapping of options")
        loaded = {key.replace("-", "_"): value for key, value in loaded.items()}
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"--config: unknown options {unknown}; known: {sorted(DEFAULTS)}")
        values.update(loaded)
    values.update({key: value for key, value in vars(args).items() if key in DEFAULTS and value is not None})
    return values


def run(args: argparse.Namespace) -> int:
    """Prune, print per-layer density and effective sparsity, save the masks; with --train, train and test."""
    try:
        opts = options(args)
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


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (the package's `panning` command wires configure/run as `panning prune`)."""
    parser = argparse.ArgumentParser(prog="panning prune", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
