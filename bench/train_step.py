"""Regenerate bench/results/train-step.md: training steps and batch-1 latency of pruned networks
(bench/test_train_step.py) per thread count, as speedups over the dense network.

    python -m bench.train_step [--threads 1 2] [--rounds 3] [--quick]

Writes bench/results/train-step-<T>t.json (pytest-benchmark's JSON: every round, the machine, the load) and
bench/results/train-step.md (per network and sparsity: the dense time and every variant's speedup, from the
minimum over rounds; the paths the panning layers took).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bench.__main__ import arguments, measure
from panning.io import write_text


def section(path: Path) -> str:
    data = json.loads(path.read_text())
    info = data["machine_info"]["panning"]
    best, paths, variants = {}, {}, []
    for result in data["benchmarks"]:
        extra = result["extra_info"]
        key = (extra["kind"], extra["network"], extra["sparsity"])
        best.setdefault(key, {})[extra["variant"]] = result["stats"]["min"]
        paths[key + (extra["variant"],)] = "+".join(extra["paths"])
        if extra["variant"] not in variants:
            variants.append(extra["variant"])
    shown = [v for v in variants if v != "dense"]
    lines = [f"## {info['threads']} thread(s)\n",
             f"{info['cpu']}, {info['cpus']} CPUs, torch {info['torch']}, {info['date']}, load average "
             f"{info['load']:.2f} at start; default backends: {info['backends']}.\n",
             "| measure | network | sparsity | dense ms | " + " | ".join(shown) + " | auto's paths |",
             "|---|---|---|---:|" + "---:|" * len(shown) + "---|"]
    for (kind, name, sparsity), times in best.items():
        dense = times["dense"]
        cells = [f"{dense / times[v]:.2f}x" if v in times else "" for v in shown]
        lines.append(f"| {kind} | {name} | {sparsity:.0%} | {dense * 1e3:.2f} | " + " | ".join(cells)
                     + f" | {paths.get((kind, name, sparsity, 'auto'), '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, 3, "the linear network at 98% only (a smoke run)", argv)
    sections = [section(measure("test_train_step.py", "train-step", t, args.rounds, args.quick, args.out))
                for t in args.threads]
    command = "python -m bench.train_step " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"# Training step and latency of pruned networks\n\nCommand: `{command.strip()}` (pytest-benchmark, "
            f"{args.rounds} rounds per variant, minimum kept; speedup = dense time / variant time; load average "
            f"{os.getloadavg()[0]:.2f} at the end).\n\n" + "\n".join(sections))
    write_text(args.out / "train-step.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
