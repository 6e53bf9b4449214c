"""The Python side of scripts/gpu_check.sh: what a GPU machine lacks, what it is, and the summary of a check.

    python scripts/gpu_check.py deps [--wheels DIR] [--dry-run]   install what is missing from a wheel folder
    python scripts/gpu_check.py wheels DIR [NAME ...]  download wheels of NAMEs for the GPU machine into DIR
    python scripts/gpu_check.py env                    the machine as a markdown table; fails without a CUDA GPU
    python scripts/gpu_check.py backends               the kernels built and usable; fails unless all are
    python scripts/gpu_check.py summary OUT STAGES     OUT/summary.md from the stages' results, junit and bench

It imports neither torch nor panning at the top: `deps` runs before either may be importable.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The GPU machine's image (docs/benchmarks.md, "GPU check") has everything else panning needs; these are what it
# lacked when the check was written. All pure Python.
GPU_IMAGE_LACKS = ("mnist1d", "stable-baselines3", "gymnasium", "farama-notifications")
# Platforms of the GPU machine for `pip download` (x86-64 Linux, CPython 3.12); pure-Python wheels match "any".
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")


# ---------------------------------------------------------------------------------------------- requirements


def requirements() -> list[str]:
    """The build requirements, dependencies and test extra of pyproject.toml."""
    try:
        import tomllib  # Python 3.11+; the GPU machine has 3.12
    except ModuleNotFoundError:
        import tomli as tomllib  # the same parser, a package for Python 3.10

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return (project["build-system"]["requires"] + project["project"]["dependencies"]
            + project["project"]["optional-dependencies"]["test"])


def missing(specs: list[str]) -> list[str]:
    """The requirement strings of `specs` that no installed distribution satisfies."""
    from packaging.requirements import Requirement

    absent = []
    for spec in specs:
        requirement = Requirement(spec)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            absent.append(spec)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            absent.append(spec)
    return absent


def pip(*args: str) -> int:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command).returncode


def deps(wheels: Path | None, dry_run: bool) -> int:
    """Install what pyproject.toml asks for and this Python lacks from the wheel folder, never from an index.

    torch first, and only where this Python has no CUDA torch: a CUDA torch already there is kept.
    With `dry_run`, only say what is missing.
    """
    if wheels is not None and not wheels.is_dir():
        print(f"--wheels: {wheels} is not a folder")
        return 1
    if dry_run:
        print("missing here:", ", ".join(missing(requirements())) or "nothing")
        return 0
    try:
        import torch
        cuda_torch = torch.version.cuda is not None
    except ImportError:
        cuda_torch = False
    if not cuda_torch:
        print("no CUDA build of torch in this Python")
        if wheels is None or not list(wheels.glob("torch-*.whl")):
            print("and no torch wheel in the wheel folder: the GPU stages will fail")
            return 1
        if pip("install", "--no-index", "--find-links", str(wheels), "torch", "triton"):
            return 1
    absent = [spec for spec in missing(requirements()) if not spec.startswith(("torch", "triton"))]
    if not absent:
        print("every requirement of pyproject.toml is installed")
        return 0
    print("missing:", ", ".join(absent))
    if wheels is None:
        print("no --wheels folder given: not installed (the GPU tests and the benchmark do not import them)")
        return 0
    if pip("install", "--no-index", "--find-links", str(wheels), *absent):
        return 1
    still = missing(absent)
    print("still missing:", ", ".join(still) if still else "nothing")
    return 1 if still else 0


def download(dest: Path, names: list[str]) -> int:
    """Wheels of `names` for the GPU machine, at the versions installed here (the versions the tests ran with)."""
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"{name}: not installed here, so no version to pin; install it first")
            return 1
    platforms = [flag for p in PLATFORMS for flag in ("--platform", p)]
    return pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
               *platforms, "-d", str(dest), *pinned)


# ---------------------------------------------------------------------------------------------- the machine


def command_output(*command: str) -> str:
    """The first line of a command's output, or why there is none."""
    if shutil.which(command[0]) is None:
        return f"not found ({command[0]})"
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return f"no answer ({command[0]})"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else f"no output ({command[0]})"


def environment() -> tuple[dict[str, str], bool]:
    """({what: value} of the machine, whether torch sees a CUDA GPU)."""
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": f"{platform.python_version()} ({sys.executable})"}
    gpu = False
    try:
        import torch
        info["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda})"
        gpu = torch.cuda.is_available()
        if gpu:
            p = torch.cuda.get_device_properties(0)
            info["device"] = (f"{p.name}, compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
                              f"{p.total_memory / 2**30:.1f} GiB ({torch.cuda.device_count()} visible)")
        else:
            info["device"] = "no CUDA GPU visible to torch"
    except ImportError as error:
        info["torch"] = f"not importable ({error})"
    try:
        info["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        info["triton"] = "not installed"
    info["driver"] = command_output("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    info["nvcc"] = nvcc_version()
    info["cpus"] = str(len(os.sched_getaffinity(0)))
    return info, gpu


def nvcc_version() -> str:
    if shutil.which("nvcc") is None:
        return "not found"
    found = re.search(r"release ([\d.]+)", subprocess.run(["nvcc", "--version"], capture_output=True,
                                                           text=True).stdout)
    return found.group(1) if found else "unknown"


def env_table(info: dict[str, str]) -> str:
    order = ("device", "driver", "torch", "triton", "nvcc", "python", "cpus", "date")
    return "\n".join(["| what | value |", "|---|---|"] + [f"| {key} | {info[key]} |" for key in order if key in info])


def env() -> int:
    info, gpu = environment()
    print(env_table(info))
    print(command_output("nvidia-smi", "-L"))
    return 0 if gpu else 1


def backends() -> int:
    """Whether panning._C, panning._C_cuda and the Triton kernels all load and run on this machine's GPU."""
    from panning import ops

    report = ops.backends()
    for name, info in report.items():
        print(f"{name}: {'available' if info['available'] else 'NOT available'} ({info['reason']}); "
              f"default for: {', '.join(info['default_for']) or '-'}")
    return 0 if all(report[name]["available"] for name in ("cpp", "triton", "cuda")) else 1


# ---------------------------------------------------------------------------------------------- summary


def junit_summary(path: Path) -> list[str]:
    """Counts, failures and skip reasons of a pytest junit XML file, as markdown lines."""
    if not path.exists():
        return ["No junit.xml: the tests did not run, or were stopped before the end (see tests.log)."]
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        return [f"junit.xml does not parse ({error}): the tests were stopped mid-way (see tests.log)."]
    cases = list(root.iter("testcase"))
    outcome = Counter()
    failures, skips = [], Counter()
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        found = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        kind = found.tag if found is not None else "passed"
        outcome[kind] += 1
        message = (found.get("message") or "").splitlines() if found is not None else []
        first = message[0][:200] if message else ""
        if kind in ("failure", "error"):
            failures.append(f"- {kind}: `{name}`: {first}")
        elif kind == "skipped":
            skips[first] += 1
    seconds = sum(float(suite.get("time", 0)) for suite in root.iter("testsuite"))
    lines = [f"{len(cases)} tests in {seconds:.0f} s: {outcome['passed']} passed, {outcome['failure']} failed, "
             f"{outcome['error']} errors, {outcome['skipped']} skipped."]
    if failures:
        lines += ["", "Failures:", *failures[:40]] + ([f"- ... and {len(failures) - 40} more"] if len(failures) > 40
                                                     else [])
    if skips:
        lines += ["", "Skipped (reason: count):", *[f"- {reason}: {count}" for reason, count in skips.items()]]
    return lines


def bench_summary(out: Path) -> list[str]:
    """The targets table and notes of the benchmark table written under `out`."""
    tables = sorted(out.glob("gpu-*.md"))
    if not tables:
        return ["No benchmark table: the benchmark did not get to write one (see bench.log)."]
    text = tables[-1].read_text()
    start, end = text.find("## Targets"), text.find("## All rows")
    body = text[start:end].strip().splitlines()[1:] if start >= 0 else ["No target was reached before it stopped."]
    incomplete = [line for line in text.splitlines() if line.startswith("**Incomplete**")]
    return [f"From `{tables[-1].name}` (every row there):", *incomplete, *body]


def summary(out: Path, stages: Path) -> int:
    """Write OUT/summary.md from the stage results (tab-separated: stage, rc, seconds, budget, log)."""
    info, _ = environment()
    rows, failed = [], []
    for line in stages.read_text().splitlines():
        stage, rc, seconds, budget, log = line.split("\t")
        result = {"0": "ok", "124": "TIMED OUT", "137": "TIMED OUT (killed)"}.get(rc, f"FAILED (exit {rc})")
        if rc != "0":
            failed.append(stage)
        rows.append(f"| {stage} | {result} | {seconds} | {budget} | {log} |")
    lines = [f"# panning GPU check: {info.get('device', 'unknown device').split(',')[0]}, {info['date']}", "",
             env_table(info), "", "## Stages", "", "| stage | result | seconds | budget (s) | log |",
             "|---|---|---:|---:|---|", *rows, "",
             f"Failed stages: {', '.join(failed)}." if failed else "Every stage passed.", "",
             "## Tests (junit.xml)", "", *junit_summary(out / "junit.xml"), "",
             "## Benchmark targets", "", *bench_summary(out), ""]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    deps_command = commands.add_parser("deps")
    deps_command.add_argument("--wheels", type=Path)
    deps_command.add_argument("--dry-run", action="store_true", help="say what is missing, install nothing")
    wheels = commands.add_parser("wheels")
    wheels.add_argument("dest", type=Path)
    wheels.add_argument("names", nargs="*", default=list(GPU_IMAGE_LACKS))
    commands.add_parser("env")
    commands.add_parser("backends")
    summarize = commands.add_parser("summary")
    summarize.add_argument("out", type=Path)
    summarize.add_argument("stages", type=Path)
    args = parser.parse_args(argv)
    if args.command == "deps":
        return deps(args.wheels, args.dry_run)
    if args.command == "wheels":
        return download(args.dest, args.names)
    if args.command == "summary":
        return summary(args.out, args.stages)
    return {"env": env, "backends": backends}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
