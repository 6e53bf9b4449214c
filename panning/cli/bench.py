"""`panning bench`: measure the CPU kernels against the torch baselines and the hardware floors
(panning.cli.bench_run).

    panning bench [--quick] [--repeats 5] [--output FILE.md]
"""
from __future__ import annotations

from pathlib import Path

from .. import checks
from . import options as o
from .options import Option, UsageError, boolean

HELP = "measure the CPU kernels against the torch baselines and the hardware floors"
OPTIONS = (
    Option("quick", boolean, "small sizes (seconds, for smoke tests)", False),
    Option("repeats", int, "timed rounds per op, the minimum is kept; default 5, 3 with --quick",
           check=checks.positive_int),
    Option("output", Path, "also write the markdown table to this file", check=o.output_file),
    o.THREADS.but(default=1, help="CPU threads for torch, per process: with more, a busy machine's other work "
                  "makes the timings noise (20-40x slower, ops timed faster than their floor)"),
)


def run(opts: dict) -> int:
    """Measure and print the table (with the load average: the numbers are only as quiet as the machine)."""
    import os

    from .. import ops
    from ..io import write_text
    from ..timing import machine
    from . import bench_run

    cpp = ops.backends()["cpp"]
    if not cpp["available"]:
        raise UsageError(f"the C++ backend is not available: {cpp['reason']}")
    before = machine()
    table = bench_run.rows(opts["quick"], opts["repeats"])
    after = os.getloadavg()
    header = (f"torch {before['torch']}, {before['threads']} thread(s), {before['cpus']} CPUs, {before['date']}; "
              f"load average before {before['load']:.2f}, after {after[0]:.2f} (1 min); backends: "
              f"{bench_run.backends()}")
    text = header + "\n\n" + bench_run.markdown(table)
    print(text)
    if opts["output"] is not None:
        write_text(opts["output"], text + "\n")
    return 0
