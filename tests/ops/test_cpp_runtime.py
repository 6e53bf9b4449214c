"""The compiled CPU backend shares torch's OpenMP runtime: one thread pool per process (docs/benchmarks.md).

Two OpenMP runtimes in one process (the system libgomp for panning._C, torch's own copy for torch) keep two
pools of spinning threads that fight over a small machine's cores. setup.py links the libgomp shipped in
torch/lib (by rpath); this checks what the loader actually mapped.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from panning import ops

pytestmark = [pytest.mark.skipif(not ops.backends()["cpp"]["available"], reason="panning._C is not built"),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")]

PROBE = """
import panning._C, torch
from panning import ops
torch.set_num_threads(2)
ops.saliency(torch.randn(3, 300_000), torch.ones(1, 3))  # start the kernels' thread pool
runtimes = sorted({line.split()[-1] for line in open('/proc/self/maps') if 'libgomp' in line or 'libiomp' in line})
print('\\n'.join(runtimes))
"""


def test_one_openmp_runtime_is_loaded_and_it_is_torchs():
    import torch

    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    runtimes = done.stdout.split()
    assert len(runtimes) == 1, runtimes
    torch_lib = Path(torch.__file__).parent / "lib"
    if any(torch_lib.glob("libgomp*")):  # torch ships its own runtime: ours must be that one
        assert Path(runtimes[0]).resolve().parent == torch_lib.resolve()


def test_extension_links_torchs_runtime_by_path():
    import torch

    import panning._C as ext

    torch_lib = Path(torch.__file__).parent / "lib"
    if not (torch_lib / "libgomp.so.1").exists():
        pytest.skip("this torch ships no libgomp")
    ldd = subprocess.run(["ldd", ext.__file__], capture_output=True, text=True, check=True).stdout
    line = next(line for line in ldd.splitlines() if "libgomp" in line)
    assert str(torch_lib.resolve()) in str(Path(line.split("=>")[1].split()[0]).resolve()), line
