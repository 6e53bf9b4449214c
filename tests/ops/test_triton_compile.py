"""Every Triton kernel compiles to a CUDA binary (cubin) for Hopper, without a GPU.

The interpreter (test_triton_kernels.py) checks what the kernels compute but not that the Triton
compiler accepts them; Triton compiles ahead of time for a given target with its bundled ptxas, so
this checks that on any machine. It runs in a subprocess because this process applied @triton.jit
under TRITON_INTERPRET=1 (see conftest.py). Typical specializations are compiled: float32, half and
float64 paths, the first and later radix rounds, with and without the optional epilogues.
On a GPU machine the compiled kernels also run in test_triton_kernels.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import sys
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from panning.kernels import masked_matmul as mm, saliency as sal, sparse_matmul as sp, topk

TARGET = GPUTarget("cuda", int(sys.argv[1]), 32)


def compile_(kernel, types, constants, options):
    fn = kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel
    signature = {name: types.get(name, "constexpr") for name in fn.arg_names}
    missing = [name for name, kind in signature.items() if kind == "constexpr" and name not in constants]
    assert not missing, f"{fn.__name__}: no value for {missing}"
    triton.compile(ASTSource(fn, signature, constexprs=constants), target=TARGET, options=options)


def tile_args(scores):
    return {"scores_ptr": scores, "tile_segment_ptr": "*i64", "tile_first_ptr": "*i64", "offsets_ptr": "*i64",
            "num_segments": "i32"}


failures = []
cases = []
# saliency and product score
for ty, acc in (("fp32", tl.float32), ("fp64", tl.float64)):
    cases.append((sal._tile_stats_kernel, {"indices_ptr": f"*{ty}", "sums_ptr": "*fp64", "m2_ptr": "*fp64",
                                           "n": "i32", "num_tiles": "i32"}, {"BLOCK": 1024, "TILE": 16384}))
    cases.append((sal._combine_kernel, {"indices_ptr": f"*{ty}", "weights_ptr": "*fp64", "mean_ptr": "*fp64",
                                        "inv_std_ptr": "*fp64", "out_ptr": f"*{ty}", "n": "i64", "num_indices": "i32",
                                        "rows": "i32"}, {"ACC": acc, "BLOCK_B": 4, "BLOCK_N": 1024, "TILE_N": 16384}))
cases.append((sal._merge_stats_kernel, {"sums_ptr": "*fp64", "m2_ptr": "*fp64", "mean_ptr": "*fp64",
                                        "inv_std_ptr": "*fp64", "n": "i64", "num_tiles": "i32"},
              {"TILE": 16384, "MERGE": 1024}))
for ty in ("fp32", "bf16"):
    cases.append((sal._product_kernel, {"weight_ptr": f"*{ty}", "grad_ptr": f"*{ty}", "out_ptr": f"*{ty}", "n": "i32"},
                  {"COMPUTE": tl.float32, "ABSOLUTE": True, "BLOCK": 4096}))
# top-k: 32-bit keys (first and later rounds), 16- and 64-bit keys
for ty, sint, uint, bits, state in (("fp32", tl.int32, tl.uint32, 32, "i32"), ("bf16", tl.int16, tl.uint16, 16, "i16"),
                                    ("fp64", tl.int64, tl.uint64, 64, "i64")):
    keys = {"SINT": sint, "UINT": uint, "BITS": bits, "BLOCK": 1024, "TILE": 4096}
    for hi in (bits, bits - 8):
        cases.append((topk._histogram_kernel, {**tile_args(f"*{ty}"), "prefix_ptr": f"*{state}", "hist_ptr": "*i64",
                                               "nan_ptr": "*i32"}, {**keys, "LO": hi - 8, "HI": hi, "STRIDE": 256}))
    cases.append((topk._pick_kernel, {"hist_ptr": "*i64", "prefix_ptr": f"*{state}", "remaining_ptr": "*i64",
                                      "equal_ptr": "*i64"},
                  {"SINT": sint, "UINT": uint, "LO": 0, "HI": 8, "STRIDE": 256, "LAST": True}))
    cases.append((topk._tie_count_kernel, {**tile_args(f"*{ty}"), "threshold_ptr": f"*{state}",
                                           "remaining_ptr": "*i64", "equal_ptr": "*i64", "tile_equal_ptr": "*i64"},
                  keys))
    cases.append((topk._write_kernel, {**tile_args(f"*{ty}"), "threshold_ptr": f"*{state}", "remaining_ptr": "*i64",
                                       "ties_before_ptr": "*i64", "mask_ptr": "*i1"}, keys))
# masked linear: the forward in every autotuning configuration, both kernels in every precision
def masked_cases(ty, acc, dot, precision, config, both):
    types = {"ACC": acc, "DOT": dot, "PRECISION": precision, **config.kwargs}
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    mask = "*fp64" if ty == "fp64" else "*i1"  # see masked_matmul._mask_operand
    cases.append((mm._masked_matmul_kernel, {"a_ptr": f"*{ty}", "w_ptr": f"*{ty}", "mask_ptr": mask,
                                             "bias_ptr": f"*{ty}", "out_ptr": f"*{ty}", "M": "i32", "N": "i32",
                                             "K": "i32", "stride_am": "i32", "stride_ak": "i32", "stride_wk": "i32",
                                             "stride_wn": "i32"}, {"HAS_BIAS": True, **types}, options))
    if both:
        cases.append((mm._weight_grad_kernel, {"dy_ptr": f"*{ty}", "x_ptr": f"*{ty}", "w_ptr": f"*{ty}",
                                               "mask_ptr": "*i1", "dw_ptr": f"*{ty}", "dscore_ptr": f"*{ty}",
                                               "M": "i32", "N": "i32", "K": "i32"},
                      {"NEED_DW": True, "NEED_DSCORE": True, **types}, options))


for ty, acc, dot, precision in (("fp32", tl.float32, tl.float32, "ieee"), ("fp32", tl.float32, tl.float32, "tf32"),
                                ("bf16", tl.float32, tl.bfloat16, "ieee"), ("fp64", tl.float64, tl.float64, "ieee")):
    configs = mm._for_the_dot(mm._configs(), {}, PRECISION=precision, DOT=dot)
    for config in configs if ty != "fp64" and precision != "tf32" else configs[:1]:
        masked_cases(ty, acc, dot, precision, config, both=config is configs[0])
# sparse linear
for ty, acc in (("fp32", tl.float32), ("bf16", tl.float32), ("fp64", tl.float64)):
    cases.append((sp._csr_matmul_kernel, {"crow_ptr": "*i64", "col_ptr": "*i64", "values_ptr": f"*{ty}",
                                          "perm_ptr": "*i64", "bt_ptr": f"*{ty}", "bias_ptr": f"*{ty}",
                                          "out_ptr": f"*{ty}", "rows": "i32", "M": "i32", "stride_out_m": "i32",
                                          "stride_out_r": "i32"},
                  {"HAS_PERM": True, "HAS_BIAS": True, "ACC": acc, "BLOCK_R": 16, "BLOCK_M": 32, "BLOCK_NZ": 16}))
    cases.append((sp._sddmm_kernel, {"row_ptr": "*i64", "col_ptr": "*i64", "at_ptr": f"*{ty}", "bt_ptr": f"*{ty}",
                                     "out_ptr": f"*{ty}", "nnz": "i64", "M": "i32"},
                  {"ACC": acc, "BLOCK_NZ": 64, "BLOCK_M": 32}))
cases.append((sp._row_count_kernel, {"mask_ptr": "*i1", "counts_ptr": "*i64", "cols": "i32"}, {"BLOCK": 1024}))
cases.append((sp._compress_kernel, {"weight_ptr": "*fp32", "mask_ptr": "*i1", "crow_ptr": "*i64", "col_ptr": "*i64",
                                    "values_ptr": "*fp32", "cols": "i32"}, {"BLOCK": 1024}))

for kernel, types, constants, *options in cases:
    try:
        compile_(kernel, types, constants, options[0] if options else {"num_warps": 4})
    except Exception as error:  # report every failing kernel, not just the first
        failures.append(f"{kernel.fn.__name__} {types} {constants}: "
                        f"{type(error).__name__}: {str(error)[:2000]}")
print(f"compiled {len(cases) - len(failures)} of {len(cases)}")
print("\n\n".join(failures))
sys.exit(1 if failures else 0)
'''


@pytest.mark.parametrize("capability", [90])
def test_every_triton_kernel_compiles_for_the_gpu(capability):
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(capability)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
