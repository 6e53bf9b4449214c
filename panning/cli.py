"""The ``panning`` command line: ``panning <command> [options]``.

Each command is a :class:`Command` in :data:`COMMANDS`: a help line, its options (an :class:`Option` table that
builds both the argparse flags and the keys a ``--config`` YAML file may set) and a ``run(options) -> exit
status`` function. Plugging in a command means replacing its entry. Precedence of values: command-line flag >
config file > the command's defaults.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from rich.console import Console
from rich.table import Table

from panning import bench, data, demo, models
from panning.commands import Command, Option, add_options, boolean, resolve
from panning.jackpot import cli as jackpot_cli
from panning.pbt import agent_cli
from panning.pbt import cli as prune_cli
from panning.train import OPTIMIZERS, RECIPES, train


# ----------------------------------------------------------------------------------------------- train


TRAIN_OPTIONS = (
    Option("data", str, "data set (default mnist1d)", data.available()),
    Option("model", str, "model (default cnn1d)", models.available()),
    Option("epochs", int, "epochs (default: the model's recipe)"),
    Option("batch-size", int, "batch size (default: the model's recipe)"),
    Option("lr", float, "peak learning rate (default: the model's recipe)"),
    Option("momentum", float, "SGD momentum (default 0.9)"),
    Option("weight-decay", float, "L2 weight decay (default: the model's recipe)"),
    Option("optimizer", str, "optimizer (default: the model's recipe)", OPTIMIZERS),
    Option("seed", int, "seed of the initialization, data order and data split (default 0)"),
    Option("width", float, "channel / hidden-unit multiplier of the model (default 1.0)"),
    Option("data-dir", Path, "folder of a local data set (CIFAR python-pickle folder or its parent)"),
    Option("checkpoint", Path, "checkpoint file, written every epoch; an existing one is resumed"),
    Option("save", Path, "write the trained model here (safetensors, loadable with panning.models.load)"),
    Option("device", str, "torch device (default cpu)"),
    Option(
        "threads", int,
        "CPU threads for torch (default: torch's choice; 1 is as fast for the small models and far faster on "
        "a busy machine)",
    ),
    Option("progress", boolean, "show a progress bar (default on)"),
)


TRAIN_DEFAULTS = dict(data="mnist1d", model="cnn1d", seed=0, width=1.0, device="cpu", progress=True)
_RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer")


def run_train(options: dict) -> int:
    """Build the model, train it with its recipe (overridden by the options), print a results table."""
    if options.get("threads") is not None:
        if options["threads"] < 1:
            raise ValueError(f"threads must be >= 1, got {options['threads']}")
        torch.set_num_threads(options["threads"])
    bundle = data.load(options["data"], seed=options["seed"], data_dir=options.get("data_dir"))
    torch.manual_seed(options["seed"])
    model = models.build(options["model"], bundle.input_shape, bundle.num_classes, width=options["width"])
    recipe = {**RECIPES[options["model"]], **{k: options[k] for k in _RECIPE_KEYS if options.get(k) is not None}}
    result = train(
        model, bundle, **recipe, seed=options["seed"], device=options["device"],
        checkpoint=options.get("checkpoint"), progress=options["progress"],
    )  # fmt: skip
    if options.get("save") is not None:
        models.save(
            options["save"], model, name=options["model"], input_shape=bundle.input_shape,
            num_classes=bundle.num_classes, width=options["width"], data=bundle.name, test_acc=result.test_acc,
        )  # fmt: skip
    _print_table(
        "panning train",
        {
            "data": bundle.name,
            "model": options["model"] + ("" if options["width"] == 1.0 else f" x{options['width']:g}"),
            "params": f"{sum(p.numel() for p in model.parameters()):,}",
            "epochs": str(result.epochs),
            "test loss": f"{result.test_loss:.4f}",
            "test acc": f"{100 * result.test_acc:.2f}%",
            "time": f"{result.wall_time:.1f} s",
        },
    )
    return 0


def _print_table(title: str, row: dict) -> None:
    table = Table(title=title)
    for column in row:
        table.add_column(column, justify="left" if column in ("data", "model") else "right")
    table.add_row(*row.values())
    Console(file=sys.stdout).print(table)


# ----------------------------------------------------------------------------------------------- commands


COMMANDS: dict[str, Command] = {
    "train": Command("train a model on a data set", run_train, TRAIN_OPTIONS, TRAIN_DEFAULTS),
    "prune": Command("prune a network before training", prune_cli.run, prune_cli.OPTIONS, prune_cli.DEFAULTS),
    "jackpot": Command("search a lottery jackpot mask in a pre-trained network", jackpot_cli.run, jackpot_cli.OPTIONS,
                       jackpot_cli.DEFAULTS),
    "agent": Command("train the panning agent (RL panning) for a network", agent_cli.run, agent_cli.OPTIONS, agent_cli.DEFAULTS),
    "bench": Command("measure the CPU kernels against the torch baselines and the hardware floors", bench.run,
                     bench.OPTIONS, bench.DEFAULTS),
    "demo": Command("prune MNIST-1D's CNN before training with several methods and compare", demo.run, demo.OPTIONS,
                    demo.DEFAULTS),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    commands = COMMANDS
    parser = argparse.ArgumentParser(prog="panning", description="Find sparse sub-networks fast.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, command in commands.items():
        add_options(sub.add_parser(name, help=command.help, description=command.help), command.options)
    args = parser.parse_args(argv)
    command = commands[args.command]
    try:
        return command.run(resolve(command, args))
    except (ValueError, OSError) as e:
        print(f"panning {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
