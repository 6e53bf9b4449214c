"""pytest-benchmark setup of the benchmark suites under bench/ (run them with `python -m bench`).

The torch thread count comes from PANNING_BENCH_THREADS (default: torch's choice); the machine information
stored with every result carries the thread count, the load average and the default backend of each op.
"""
import os

import torch

from panning import timing
from panning.cli import bench_run

if os.environ.get("PANNING_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["PANNING_BENCH_THREADS"]))


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["panning"] = timing.machine() | {"backends": bench_run.backends()}
