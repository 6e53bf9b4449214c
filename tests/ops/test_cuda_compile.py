"""Compile check of the CUDA sources (csrc/cuda/*.cu) with nvcc, on any machine that has the toolkit.

The .cu files are kept free of torch headers precisely so that this check needs nothing but nvcc:
it runs without a GPU and without a CUDA build of torch. It compiles for Hopper (sm_90) and for the
oldest virtual architecture this nvcc knows (PTX that any newer GPU can JIT).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


def _nvcc() -> str | None:
    candidates = [shutil.which("nvcc")] + [os.path.join(home, "bin", "nvcc") for home in
                                          (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")
                                          if home]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


NVCC = _nvcc()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, CUDA_HOME, /usr/local/cuda): "
                                                      "the CUDA sources cannot be compile-checked on this machine")]


def _generic_arch() -> str:
    listed = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    return min(re.findall(r"compute_\d+", listed), key=lambda name: int(name.split("_")[1]))


def test_there_are_cuda_sources_and_they_include_no_torch():
    assert SOURCES, "csrc/cuda has no .cu file"
    for source in SOURCES + sorted((ROOT / "csrc" / "cuda").glob("*.cuh")):
        includes = re.findall(r"#include\s*[<\"]([^>\"]+)", source.read_text())
        assert not [i for i in includes if i.split("/")[0] in ("torch", "ATen", "c10")], (source.name, includes)


@pytest.mark.parametrize("arch", ["sm_90", "generic"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles(source, arch, tmp_path):
    arch = _generic_arch() if arch == "generic" else arch
    output = tmp_path / (source.stem + ".o")
    command = [NVCC, "-c", str(source), "-o", str(output), f"-arch={arch}", "-std=c++17", "-O3",
               "--use_fast_math", f"-I{ROOT / 'csrc'}"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    assert output.stat().st_size > 0
