"""The compressed convolution per layer under pytest-benchmark: one group per case of `bench.conv_cases`, in which
ours, dense torch and SparseProp are timed side by side (docs/benchmarks.md lists the targets).

    python -m bench --suite conv --threads 1     # writes bench/results/ (JSON, markdown, PNG)

PANNING_BENCH_QUICK=1 shrinks the cases; PANNING_BENCH_ROUNDS sets the timed rounds (default 5). A SparseProp
variant is skipped, with the reason, where sparseprop is not installed.
"""
from __future__ import annotations

import os

import pytest

from bench import conv_cases
from panning.cli import bench_run as bench

QUICK = os.environ.get("PANNING_BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("PANNING_BENCH_ROUNDS", "5"))
CASES = conv_cases.cases(QUICK)


@pytest.mark.parametrize("case,variant", [(case, name) for case in CASES for name in case.names],
                         ids=[f"{case.group} | {name}" for case in CASES for name in case.names])
def test_layer(benchmark, case, variant):
    if variant in conv_cases.SPARSEPROP and conv_cases.MISSING:
        pytest.skip(conv_cases.MISSING)
    benchmark.group = case.group
    benchmark.extra_info.update(case=case.group, variant=variant, targets=[str(t) for t in case.targets])
    benchmark.pedantic(bench.built(case)[variant], rounds=ROUNDS, warmup_rounds=1, iterations=1)
