"""The one command that regenerates the CPU kernel results (docs/benchmarks.md):

    python -m bench [--threads 1 2] [--rounds 5] [--quick] [--out bench/results]

For each thread count it runs bench/test_cpu_kernels.py under pytest-benchmark in a fresh process (the thread
count is fixed at start), then writes under --out:
  cpu-kernels-<T>t.json   pytest-benchmark's JSON (every round of every variant, machine and load included);
  cpu-kernels.md          one table of ratios per thread count (minimum over rounds), targets met or missed;
  cpu-kernels.png         the ratios as bars.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from panning import bench

ROOT = Path(__file__).resolve().parent.parent


def measure(threads: int, rounds: int, quick: bool, out: Path, suite: str = "test_cpu_kernels.py",
            stem: str = "cpu-kernels") -> Path:
    """Run one pytest-benchmark suite of bench/ in a fresh process at `threads`; the path of its JSON."""
    path = out / f"{stem}-{threads}t.json"
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}  # e.g. xdist's
    env = inherited | {"PANNING_BENCH_THREADS": str(threads), "PANNING_BENCH_ROUNDS": str(rounds),
                        "OMP_NUM_THREADS": str(threads), "PANNING_BENCH_QUICK": "1" if quick else "0"}
    command = [sys.executable, "-m", "pytest", str(ROOT / "bench" / suite), "-q", "-o", "addopts=",
               "-p", "no:cacheprovider", "-p", "no:xdist", "--benchmark-enable", "--benchmark-sort=name",
               f"--benchmark-json={path}", "--benchmark-columns=min,median,rounds"]
    subprocess.run(command, env=env, cwd=ROOT, check=True)
    return path


def table(path: Path) -> tuple[dict, list[dict]]:
    """(machine info, rows) from one pytest-benchmark JSON, ratios from the minimum of each variant."""
    data = json.loads(path.read_text())
    best: dict[str, dict[str, float]] = {}
    for result in data["benchmarks"]:
        info = result["extra_info"]
        best.setdefault(info["case"], {})[info["variant"]] = result["stats"]["min"]
    cases = {case.group: case for case in bench.cases(quick=False) + bench.cases(quick=True)}
    return data["machine_info"]["panning"], [bench.row(cases[group], times) for group, times in best.items()]


def arguments(doc: str, rounds: int, quick: str, argv: list[str] | None) -> argparse.Namespace:
    """The options of a suite runner (--threads, --rounds, --quick, --out); --out is created."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, 5, "small shapes (a smoke run)", argv)
    sections, plotted = [], ([], "")
    for threads in args.threads:
        info, rows = table(measure(threads, args.rounds, args.quick, args.out))
        after = os.getloadavg()[0]
        title = (f"{info['threads']} thread(s), {info['cpu']}, {info['cpus']} CPUs, torch {info['torch']}, "
                 f"{info['date']}, load average {info['load']:.2f} at start, {after:.2f} at end")
        sections.append(f"## {info['threads']} thread(s)\n\n{title}; default backends: {info['backends']}.\n\n"
                        f"{bench.markdown(rows)}\n")
        if threads == max(args.threads):  # the plot shows the largest thread count
            plotted = (rows, title)
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"# CPU kernels: ours against the torch way and the floor\n\nCommand: `{command.strip()}` "
            f"(pytest-benchmark, {args.rounds} rounds per variant, minimum kept; ratio = baseline time / ours).\n\n"
            + "\n".join(sections))
    (args.out / "cpu-kernels.md").write_text(text)
    bench.plot(plotted[0], args.out / "cpu-kernels.png", plotted[1])
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
