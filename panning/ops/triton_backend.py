"""The Triton GPU backend (kernels/, shipped as panning.kernels).

On a machine without a GPU it runs only under TRITON_INTERPRET=1 (for tests), on CPU tensors.
"""
from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401
    _WHY_NOT = ""
except ImportError as error:
    triton = None
    _WHY_NOT = f"triton is not installed ({error})"

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = ("cuda", "cpu") if INTERPRETED else ("cuda",)


def status() -> tuple[bool, str]:
    if triton is None:
        return False, _WHY_NOT
    if INTERPRETED:
        return True, "Triton interpreter (TRITON_INTERPRET=1): correctness only"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU (set TRITON_INTERPRET=1 to run the kernels in the interpreter)"
    return True, f"Triton on {torch.cuda.get_device_name()}"
