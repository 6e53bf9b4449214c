"""Launch settings shared by the kernels.

Under the Triton interpreter (TRITON_INTERPRET=1, the CPU test mode) the cost of a kernel grows with
the number of vector operations executed, hardly with their width, so there the kernels take wide
blocks; on a GPU they take blocks sized for registers and occupancy.
"""
import triton

INTERPRETED = bool(triton.knobs.runtime.interpret)


def width(gpu: int, interpreted: int) -> int:
    """Elements per vector operation: `gpu` on a GPU, `interpreted` under the interpreter."""
    return interpreted if INTERPRETED else gpu
