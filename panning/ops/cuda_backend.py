"""The hand-written CUDA backend (csrc/cuda/), bound into panning._C_cuda where it was built."""
from __future__ import annotations

import torch

try:
    from panning import _C_cuda
    _WHY_NOT = ""
except ImportError as error:
    _C_cuda = None
    _WHY_NOT = ("panning._C_cuda is not built (needs a CUDA build of torch and the CUDA toolkit "
                f"at install time): {error}")

DEVICES = ("cuda",)


def status() -> tuple[bool, str]:
    if _C_cuda is None:
        return False, _WHY_NOT
    if not torch.cuda.is_available():
        return False, "panning._C_cuda is built but no CUDA GPU is visible"
    return True, f"CUDA kernels on {torch.cuda.get_device_name()}"
