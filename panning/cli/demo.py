"""`panning demo`: prune MNIST-1D's CNN before training with several methods and compare (panning.demo).

    panning demo [--methods random,snip,synflow,panning] [--sparsity 0.9] [--epochs 5] [--threads 1]
"""
from __future__ import annotations

from pathlib import Path

from .. import checks
from . import options as o
from .options import Option

HELP = "prune MNIST-1D's CNN before training with several methods and compare them"


@o.importing
def methods(name: str, text: str) -> list[str]:
    """The comma-separated method names of --methods (any of panning.pbt.METHODS but rl_panning)."""
    from ..pbt.methods import METHODS

    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError(f"{name}: expected comma-separated pruning methods, got {text!r}")
    return [checks.choice(name, m, [k for k in METHODS if k != "rl_panning"]) for m in names]


OPTIONS = (
    o.DATA, o.MODEL, o.SPARSITY,
    Option("methods", str, "comma-separated pruning methods (panning.pbt.METHODS but rl_panning)",
           "random,snip,synflow,panning", check=methods),
    Option("iterations", int, "steps of the iterative methods", 20, check=checks.positive_int),
    o.EPOCHS, o.SEED,
    Option("out", Path, "folder for the masks, results.json and the plot", Path("runs/demo"),
           check=o.output_folder),
    o.THREADS, o.PROGRESS,
)


def run(opts: dict) -> int:
    from .. import demo

    return demo.run(opts | {"model": o.model_for(opts)})
