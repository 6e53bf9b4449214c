"""The one timing helper of the benchmarks, and the record of the machine a measurement ran on.

`interleaved` calls the variants round by round, so that a change of machine load hits all of them alike; the
minimum over rounds is the robust figure (`summary`). Every script under bench/ and `panning bench` time with it.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of every function, called round by round (one call of each per round)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """(min, median) of each variant's times."""
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def machine() -> dict:
    """What the numbers were measured on: CPU, threads, torch, load average (1 min) and date."""
    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
