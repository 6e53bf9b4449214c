"""Benchmarks of panning (docs/benchmarks.md); `python -m bench` regenerates bench/results/."""
