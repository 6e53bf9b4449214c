"""Settings shared by the kernel launchers: vector widths, arithmetic types, the device to launch on.

Under the Triton interpreter (TRITON_INTERPRET=1, the CPU test mode) the cost of a kernel grows with
the number of vector operations executed, hardly with their width, so there the kernels take wide
blocks; on a GPU they take blocks sized for registers and occupancy.
"""
import contextlib
import functools

import torch
import triton
import triton.language as tl

INTERPRETED = bool(triton.knobs.runtime.interpret)


def width(gpu: int, interpreted: int) -> int:
    """Elements per vector operation: `gpu` on a GPU, `interpreted` under the interpreter."""
    return interpreted if INTERPRETED else gpu


def accumulator(dtype: torch.dtype):
    """Arithmetic type for data of `dtype`: float64 stays float64, everything else works in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def on_device(launcher):
    """Run `launcher` with its first argument's GPU as the current device: Triton launches on the
    current device, which need not be the one holding the tensors."""
    @functools.wraps(launcher)
    def run(first: torch.Tensor, *args, **kwargs):
        with torch.cuda.device(first.device) if first.is_cuda else contextlib.nullcontext():
            return launcher(first, *args, **kwargs)
    return run
