"""Triton kernels of panning (shipped as panning.kernels). Kernels only: dispatch lives in panning.ops."""
