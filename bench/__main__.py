"""The one command that regenerates the CPU kernel results (docs/benchmarks.md):

    python -m bench [--suite kernels|conv] [--threads 1 2] [--rounds 5] [--quick] [--out bench/results]

For each thread count it runs the suite's pytest-benchmark file in a fresh process (the thread count is fixed at
start), then writes under --out, NAME being cpu-kernels (suite `kernels`, bench/test_cpu_kernels.py: every op
against the torch way and the floor) or sparse-conv (suite `conv`, bench/test_sparse_conv.py: the compressed
convolution and linear per layer against dense torch and SparseProp):
  NAME-<T>t.json   pytest-benchmark's JSON (every round of every variant, machine and load included);
  NAME.md          one table of ratios per thread count (minimum over rounds), targets met or missed;
  NAME.png         the ratios as bars.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from panning.cli import bench_run as bench

from . import conv_cases

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Suite:
    test: str  # the pytest-benchmark file under bench/
    name: str  # the stem of what it writes
    title: str
    cases: Callable[[bool], list[bench.Case]]
    row: Callable[[bench.Case, dict[str, float]], dict]
    note: str = ""  # said under the title, e.g. a baseline that could not run


SUITES = {
    "kernels": Suite("test_cpu_kernels.py", "cpu-kernels", "CPU kernels: ours against the torch way and the floor",
                     bench.cases, bench.row),
    "conv": Suite("test_sparse_conv.py", "sparse-conv", "Compressed convolution and linear per layer: ours "
                  "against dense torch and SparseProp", conv_cases.cases, conv_cases.row,
                  f"SparseProp was not measured: {conv_cases.MISSING}." if conv_cases.MISSING else
                  "SparseProp: the faster of its batch- and width-vectorized variants."),
}


def measure(test: str, name: str, threads: int, rounds: int, quick: bool, out: Path) -> Path:
    """Run the pytest-benchmark file `test` of bench/ in a fresh process at `threads`; the path of its JSON
    (`name`-<threads>t.json)."""
    path = out / f"{name}-{threads}t.json"
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}  # e.g. xdist's
    env = inherited | {"PANNING_BENCH_THREADS": str(threads), "PANNING_BENCH_ROUNDS": str(rounds),
                        "OMP_NUM_THREADS": str(threads), "PANNING_BENCH_QUICK": "1" if quick else "0"}
    command = [sys.executable, "-m", "pytest", str(ROOT / "bench" / test), "-q", "-o", "addopts=",
               "-p", "no:cacheprovider", "-p", "no:xdist", "--benchmark-enable", "--benchmark-sort=name",
               f"--benchmark-json={path}", "--benchmark-columns=min,median,rounds"]
    subprocess.run(command, env=env, cwd=ROOT, check=True)
    return path


def table(suite: Suite, path: Path) -> tuple[dict, list[dict]]:
    """(machine info, rows) from one pytest-benchmark JSON, ratios from the minimum of each variant."""
    data = json.loads(path.read_text())
    best: dict[str, dict[str, float]] = {}
    for result in data["benchmarks"]:
        info = result["extra_info"]
        best.setdefault(info["case"], {})[info["variant"]] = result["stats"]["min"]
    cases = {case.group: case for case in suite.cases(False) + suite.cases(True)}
    return data["machine_info"]["panning"], [suite.row(cases[group], times) for group, times in best.items()]


def arguments(doc: str, rounds: int, quick: str, argv: list[str] | None,
              suites: dict | None = None) -> argparse.Namespace:
    """The options of a suite runner (--threads, --rounds, --quick, --out, and --suite where `suites` are
    given); --out is created."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if suites:
        parser.add_argument("--suite", choices=sorted(suites), default=next(iter(suites)))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, 5, "small shapes (a smoke run)", argv, SUITES)
    suite = SUITES[args.suite]
    sections, plotted = [], ([], "")
    for threads in args.threads:
        info, rows = table(suite, measure(suite.test, suite.name, threads, args.rounds, args.quick, args.out))
        after = os.getloadavg()[0]
        title = (f"{info['threads']} thread(s), {info['cpu']}, {info['cpus']} CPUs, torch {info['torch']}, "
                 f"{info['date']}, load average {info['load']:.2f} at start, {after:.2f} at end")
        sections.append(f"## {info['threads']} thread(s)\n\n{title}; default backends: {info['backends']}.\n\n"
                        f"{bench.markdown(rows)}\n")
        if threads == max(args.threads):  # the plot shows the largest thread count
            plotted = (rows, title)
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"# {suite.title}\n\nCommand: `{command.strip()}` (pytest-benchmark, {args.rounds} rounds per "
            f"variant, minimum kept; ratio = baseline time / ours). {suite.note}\n\n" + "\n".join(sections))
    (args.out / f"{suite.name}.md").write_text(text)
    bench.plot(plotted[0], args.out / f"{suite.name}.png", plotted[1])
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
