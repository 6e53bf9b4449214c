"""`panning demo`: both jobs of the library in small on MNIST-1D (panning.cli.demo_run), resumable.

    panning demo                      # the full demo: a few minutes on 2 CPU cores
    panning demo --quick              # about a minute: fewer epochs and steps (the report says so)
    panning demo --out runs/demo      # rerun the same command after an interruption: finished cells are reused

Trains the dense cnn1d (width 4, the protocol of the pruning-before-training experiment), prunes it before
training with Panning, RL Panning (the shipped agent) and reference criteria at one sparsity and trains each;
searches a lottery jackpot at 90% inside the trained dense network; prints one table and writes report.md,
results.json and PNG plots into --out.
"""
from __future__ import annotations

from pathlib import Path

from . import options as o
from .options import Option, boolean

HELP = ("MNIST-1D's protocol CNN pruned before training (Panning, RL Panning, baselines) and a lottery jackpot "
        "searched in it: one table, a report, plots")
DEFAULT_METHODS = "panning,rl_panning,synflow,snip,magnitude,random"
_FULL_OR_QUICK = "; default: {} ({} with --quick)"


@o.importing
def methods(name: str, text: str) -> list[str]:
    """The comma-separated, distinct method names of --methods (any of panning.pbt.METHODS)."""
    from ..pbt.methods import METHODS

    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names or len(set(names)) != len(names) or not set(names) <= set(METHODS):
        raise ValueError(f"{name}: expected distinct methods of {', '.join(METHODS)}, comma-separated, got {text!r}")
    return names


OPTIONS = (
    Option("sparsity", float, "sparsity of the pruning before training, in [0, 1); at 0.98 the methods "
           "separate on this network (docs/results.md)", 0.98),
    Option("methods", str, "comma-separated pruning methods (panning.pbt.METHODS)", DEFAULT_METHODS,
           check=methods),
    Option("agent", Path, "RL Panning's agent, its path without suffix; default: the one the package ships "
           "(panning/pbt/rl/agents/cnn1d-w4-mnist1d; the row is skipped, saying so, if it is absent)"),
    Option("jackpot-sparsity", float, "sparsity of the lottery jackpot searched in the dense network", 0.9),
    Option("quick", boolean, "a shortened run of about a minute (fewer epochs and steps; the report says so)",
           False),
    o.EPOCHS.but(help="training epochs of the dense and of every pruned network" + _FULL_OR_QUICK.format(15, 3)),
    Option("iterations", int, "steps of the iterative methods" + _FULL_OR_QUICK.format(100, 20)),
    Option("jackpot-epochs", int, "epochs of the jackpot search" + _FULL_OR_QUICK.format(10, 2)),
    o.WIDTH.but(default=4.0, help="width multiplier of cnn1d (4: the protocol; the shipped agent is for 4)"),
    o.SEED,
    Option("out", Path, "results folder: report.md, results.json, plots, cells/ (reused by a rerun), masks/, "
           "checkpoints/",
           Path("runs/demo"), check=o.output_folder),
    o.THREADS.but(default=1, help="CPU threads for torch (1 is as fast for this small model and far faster on a "
                  "busy machine)"),
    o.PROGRESS,
)


def resume_hint(opts: dict) -> str:
    return f"run the same command again to continue: the finished cells in {opts.get('out')}/cells are reused"


def run(opts: dict) -> int:
    from . import demo_run

    if opts["agent"] is not None and "rl_panning" not in opts["methods"]:
        raise o.UsageError("--agent: has no effect without rl_panning in --methods")

    return demo_run.run(opts)
