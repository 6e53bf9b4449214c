"""The CPU kernel benchmarks under pytest-benchmark: one group per case of `panning.cli.bench_run.cases`, in which ours,
the torch way and the floor are timed side by side (docs/benchmarks.md lists the targets).

    python -m bench                      # both thread counts, writes bench/results/ (JSON, markdown, PNG)
    python -m pytest bench/test_cpu_kernels.py --benchmark-enable -o addopts=   # this suite alone

PANNING_BENCH_QUICK=1 shrinks the shapes; PANNING_BENCH_ROUNDS sets the timed rounds (default 5). Under the
project's default `--benchmark-disable` every variant runs once, which makes the suite a smoke test.
"""
from __future__ import annotations

import os

import pytest

from panning.cli import bench_run as bench

QUICK = os.environ.get("PANNING_BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("PANNING_BENCH_ROUNDS", "5"))
CASES = bench.cases(QUICK)


@pytest.mark.parametrize("case,variant", [(case, name) for case in CASES for name in case.names],
                         ids=[f"{case.group} | {name}" for case in CASES for name in case.names])
def test_kernel(benchmark, case, variant):
    benchmark.group = case.group
    benchmark.extra_info.update(case=case.group, variant=variant, floor=case.floor,
                                targets=[str(t) for t in case.targets])
    benchmark.pedantic(bench.built(case)[variant], rounds=ROUNDS, warmup_rounds=1, iterations=1)
