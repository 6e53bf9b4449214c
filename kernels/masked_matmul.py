"""Masked linear (Triton): y = x @ (W * M)^T + b and its backward, without materializing W * M.

Contract (see `panning.ops.reference.masked_linear_fwd` / `masked_linear_bwd`):
- forward: the mask is applied while the weight tiles are loaded, and the bias in the epilogue;
- backward: dx = dy @ (W * M) with the same masked weight tiles; dW_eff = dy^T x with two fused
  epilogues, dW_eff * M (grad of the weight) and dW_eff * W (straight-through grad of the scores),
  so dW_eff itself is never written.

One tiled kernel serves forward and dx (they differ only in how the weight is strided: W^T or W);
a second computes dW_eff with its epilogues. Accumulation is float32 (float64 for float64 inputs);
float32 operands use TF32 only where torch allows it for its own matmuls
(`torch.backends.cuda.matmul.allow_tf32`), so results agree with `x @ w.t()` at the same setting.
No split-K: results are deterministic. Performance on a GPU is unmeasured (tested under the Triton
interpreter, compiled for sm_90 ahead of time); the autotuning configurations are a starting point.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._config import INTERPRETED, accumulator, on_device

# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages). Chosen from register and spill counts of sm_90 builds
# (cuobjdump of Triton's ahead-of-time compiles), not from timings: no GPU was available.
_TENSOR_CORE = [(128, 128, 32, 8, 3), (128, 64, 32, 8, 3), (64, 128, 32, 8, 3), (64, 64, 32, 8, 3),
                (32, 64, 32, 4, 4), (16, 64, 32, 4, 4)]
_CUDA_CORE = [(128, 64, 16, 8, 3), (64, 128, 16, 8, 3), (64, 64, 16, 4, 3), (32, 64, 16, 4, 3), (16, 64, 16, 4, 3)]


def _config(m: int, n: int, k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_warps=warps, num_stages=stages)


def _configs() -> list[triton.Config]:
    if INTERPRETED:  # the interpreter autotunes only a single configuration
        return [_config(32, 32, 32, 4, 1)]
    return [_config(*shape) for shape in _TENSOR_CORE + _CUDA_CORE]


def _for_the_dot(configs, named_args, **kwargs) -> list[triton.Config]:
    """Tensor-core tiles for tf32 / half dots, smaller CUDA-core tiles for exact float32 and float64."""
    cuda_core = kwargs["PRECISION"] == "ieee" and kwargs["DOT"] in (tl.float32, tl.float64)
    shapes = _CUDA_CORE if cuda_core else _TENSOR_CORE
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps,
                                   c.num_stages) in shapes]


@triton.jit
def _tile_origin(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Row and column tile of this program, grouped along M so that neighbours share operand tiles in L2."""
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    rows = tl.minimum(tiles_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % rows, (pid % per_group) // rows


@triton.autotune(configs=_configs(), key=["M", "N", "K", "PRECISION"],
                 prune_configs_by={"early_config_prune": _for_the_dot})
@triton.jit
def _masked_matmul_kernel(a_ptr, w_ptr, mask_ptr, bias_ptr, out_ptr, M, N, K,
                          stride_am, stride_ak, stride_wk, stride_wn,
                          HAS_BIAS: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """out (M, N) = a (M, K) @ (W * mask), the (K, N) operand read through strides of W (and of the
    equally laid out mask, bool or of W's dtype), + bias (N,)."""
    tile_m, tile_n = _tile_origin(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = tile_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tile_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # 64-bit offsets advanced by BLOCK_K along K each step; W and the mask share theirs.
    a_offs = offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    w_offs = offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), ACC)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(a_ptr + a_offs, mask=(offs_m[:, None] < M) & (k0 + offs_k[None, :] < K), other=0)
        w_in = (k0 + offs_k[:, None] < K) & (offs_n[None, :] < N)
        w = tl.load(w_ptr + w_offs, mask=w_in, other=0)
        w = w * tl.load(mask_ptr + w_offs, mask=w_in, other=0).to(w.dtype)  # literally W * M (inf * 0 is nan too)
        acc = tl.dot(a.to(DOT), w.to(DOT), acc, input_precision=PRECISION, out_dtype=ACC)
        a_offs += BLOCK_K * stride_ak
        w_offs += BLOCK_K * stride_wk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0).to(ACC)[None, :]
    out_in = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(out_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=out_in)


@triton.autotune(configs=_configs(), key=["M", "N", "K", "PRECISION"],
                 prune_configs_by={"early_config_prune": _for_the_dot})
@triton.jit
def _weight_grad_kernel(dy_ptr, x_ptr, w_ptr, mask_ptr, dw_ptr, dscore_ptr, M, N, K,
                        NEED_DW: tl.constexpr, NEED_DSCORE: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
                        PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """dW_eff (M=out, N=in) = dy^T x over the K=batch rows, stored only as dW_eff * mask and/or dW_eff * W."""
    tile_m, tile_n = _tile_origin(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = tile_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tile_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        dy_t = tl.load(dy_ptr + offs_k[None, :].to(tl.int64) * M + offs_m[:, None],
                       mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0)
        x = tl.load(x_ptr + offs_k[:, None].to(tl.int64) * N + offs_n[None, :],
                    mask=(offs_k[:, None] < K) & (offs_n[None, :] < N), other=0)
        acc = tl.dot(dy_t.to(DOT), x.to(DOT), acc, input_precision=PRECISION, out_dtype=ACC)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    offs = offs_m[:, None] * N + offs_n[None, :]
    if NEED_DW:
        keep = tl.load(mask_ptr + offs, mask=inside, other=0)
        tl.store(dw_ptr + offs, (acc * keep.to(ACC)).to(dw_ptr.dtype.element_ty), mask=inside)
    if NEED_DSCORE:
        w = tl.load(w_ptr + offs, mask=inside, other=0)
        tl.store(dscore_ptr + offs, (acc * w.to(ACC)).to(dscore_ptr.dtype.element_ty), mask=inside)


def _types(dtype: torch.dtype) -> dict:
    """Accumulator, dot operand type and dot precision for inputs of `dtype`."""
    acc = accumulator(dtype)
    # The interpreter multiplies bfloat16 dot operands wrongly, so it gets them as float32.
    half_in_interpreter = INTERPRETED and dtype in (torch.float16, torch.bfloat16)
    native = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}.get(dtype, acc)
    dot = tl.float32 if half_in_interpreter else native
    tf32 = dtype == torch.float32 and not INTERPRETED and torch.backends.cuda.matmul.allow_tf32
    return dict(ACC=acc, DOT=dot, PRECISION="tf32" if tf32 else "ieee")


def _mask_operand(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mask as the masked matmul kernel reads it: bool, except float64 for float64 weights.

    Triton's float64 MMA rejects a dot operand computed from 8-bit data ("fp64 don't support largeK
    MMA", found by tests/test_triton_compile.py), so float64, a testing precision, pays one conversion.
    """
    return mask.to(dtype) if dtype == torch.float64 else mask


def _grid(M: int, N: int):
    return lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


@on_device
def masked_linear_fwd(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
    """y = x @ (weight * mask)^T + bias for contiguous x (M, I), weight and bool mask (O, I)."""
    (M, K), N = x.shape, weight.shape[0]
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if y.numel():
        _masked_matmul_kernel[_grid(M, N)](x, weight, _mask_operand(mask, x.dtype), bias if bias is not None else x,
                                           y, M, N, K,
                                           K, 1, 1, K, HAS_BIAS=bias is not None, **_types(x.dtype))
    return y


@on_device
def masked_linear_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                      need_dx: bool, need_dw: bool, need_dscore: bool):
    """(dx, dW_eff * mask, dW_eff * weight), each None where not needed; dW_eff = dy^T x is not stored."""
    (M, I), O = x.shape, weight.shape[0]
    types = _types(x.dtype)
    dx = dw = dscore = None
    if need_dx:
        dx = torch.empty_like(x)
        if dx.numel():
            _masked_matmul_kernel[_grid(M, I)](dy, weight, _mask_operand(mask, x.dtype), dy, dx, M, I, O, O, 1, I, 1,
                                               HAS_BIAS=False, **types)
    if need_dw or need_dscore:
        dw = torch.empty_like(weight) if need_dw else None
        dscore = torch.empty_like(weight) if need_dscore else None
        if weight.numel():
            _weight_grad_kernel[_grid(O, I)](dy, x, weight, mask, dw if need_dw else weight,
                                             dscore if need_dscore else weight, O, I, M,
                                             NEED_DW=need_dw, NEED_DSCORE=need_dscore, **types)
    return dx, dw, dscore
