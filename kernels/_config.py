"""Settings shared by the kernels: vector widths and arithmetic types.

Under the Triton interpreter (TRITON_INTERPRET=1, the CPU test mode) the cost of a kernel grows with
the number of vector operations executed, hardly with their width, so there the kernels take wide
blocks; on a GPU they take blocks sized for registers and occupancy.
"""
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
