"""CPU kernel benchmark table (docs/benchmarks.md); the same as `panning bench`.

    python bench/bench_cpu_kernels.py [--quick] [--repeats 5] [--output bench/results/cpu-kernels-DATE.md]
"""
import sys

from panning.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
