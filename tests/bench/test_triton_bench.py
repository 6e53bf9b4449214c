"""bench/bench_gpu.py, without a GPU, stops with a clear message.

The benchmark itself needs a GPU (run it by hand there: it takes minutes and writes bench/results/).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_gpu.py"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the benchmark would really run")
def test_gpu_benchmark_refuses_to_run_without_a_gpu():
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "bench_gpu.py needs a CUDA GPU" in result.stderr
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                            env={**env, "TRITON_INTERPRET": "1"}, timeout=300)
    assert result.returncode != 0 and "TRITON_INTERPRET=1 is set" in result.stderr
