"""The time of 20 Panning steps and of one jackpot search step on each model of the foreign-model test matrix
(tests/models/test_foreign_models.py: tiny, randomly initialized torchvision, timm and Hugging Face models), one
thread; a method a model refuses is reported as refused with the first line of its error.

    python bench/foreign_models.py [--out bench/results/foreign-models.md]

A jackpot step is the difference of a 3-step and a 1-step search, halved (the search's setup cancels out).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the matrix's models live in the tests

import panning  # noqa: E402
from panning.io import write_text  # noqa: E402
from tests.models.test_foreign_models import CASES, SPARSITY  # noqa: E402


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def panning_steps(model, data) -> str:
    try:
        took = seconds(lambda: panning.prune(copy.deepcopy(model), method="panning", sparsity=SPARSITY, data=data,
                                             iterations=20, per_class=1, progress=False))
    except (RuntimeError, ValueError) as error:
        return f"refused: {str(error).splitlines()[0][:90]}"
    return f"{took:.2f}"


def jackpot_step(model, data) -> str:
    def search(steps: int) -> float:
        return seconds(lambda: panning.jackpot.search(copy.deepcopy(model), data, sparsity=SPARSITY, steps=steps,
                                                      batch_size=len(data), progress=False))
    return f"{(search(3) - search(1)) / 2 * 1e3:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "foreign-models.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["| model | weights | 20 Panning steps (s) | jackpot step (ms) |", "|---|---:|---:|---:|"]
    load = os.getloadavg()[0]
    for name, case in CASES.items():
        torch.manual_seed(0)
        model, data = case.build(), case.data()
        size = sum(p.numel() for p in model.parameters())
        lines.append(f"| {name} | {size:,} | {panning_steps(model, data)} | {jackpot_step(model, data)} |")
        print(lines[-1], flush=True)
    text = (f"# Foreign models: Panning and jackpot search time\n\nCommand: `python bench/foreign_models.py`, "
            f"1 thread, load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end, "
            f"{time.strftime('%Y-%m-%d %H:%M')} UTC. Models and data as in tests/models/test_foreign_models.py "
            f"(8 samples; sparsity {SPARSITY}).\n\n"
            + "\n".join(lines) + "\n")
    write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
