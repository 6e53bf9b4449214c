"""Shared test setup.

Without a CUDA GPU the Triton kernels can only run in Triton's interpreter, which must be chosen
before any @triton.jit is applied (at import of panning.kernels): so it is set here, at the top,
and only where no GPU is present, so that a GPU machine tests the compiled kernels.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
