"""Shared test setup.

Without a CUDA GPU the Triton kernels can only run in Triton's interpreter, which must be chosen
before any @triton.jit is applied (at import of panning.kernels): so it is set here, at the top,
and only where no GPU is present, so that a GPU machine tests the compiled kernels.

Under pytest-xdist every worker gets one torch thread: workers x threads beyond the cores makes
OpenMP threads spin against each other. Tests that compare thread counts set them explicitly.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
