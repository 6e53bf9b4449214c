"""The one place that decides which backend runs an op.

A backend is a module exposing `status() -> (available, reason)`, `DEVICES` (device types it runs
on), and one kernel function per op it implements (see `reference.py` for the kernel contract).
Kernels are looked up by op name, so a backend implements any subset of the ops.

Selection: an explicit `backend=` argument, else the `PANNING_BACKEND` environment variable, else
the first available backend in the op's order for the device type: `MEASURED[(device type, op)]` where
side-by-side measurements chose one (bench/, docs/benchmarks.md), else `PREFERENCE[device type]`. An
explicitly requested backend that cannot run the op raises; nothing falls back silently.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from functools import cache
from types import ModuleType

import torch

BACKENDS = ("reference", "cpp", "triton", "cuda")
PREFERENCE = {
    "cpu": ("cpp", "reference"),
    "cuda": ("cuda", "triton", "reference"),
}
OPS = ("saliency", "product_score", "topk_mask", "masked_linear_fwd", "masked_linear_bwd",
       "to_sparse", "sparse_linear_fwd", "sparse_linear_bwd", "sparse_conv_fwd", "sparse_conv_bwd")

# (device type, public op) -> (order, why): the default per op where it was measured, with the measurement
# (ratio = reference time / cpp time, side by side in one run; `python -m bench`, 2-core CPU machine).
# An op and its backward share one entry: the forward's choice runs both. Re-measure before changing.
MEASURED: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("cpu", "saliency"): (("cpp", "reference"), "cpp measured 68.6x the reference (3 x 20M fp32, 1 thread)"),
    ("cpu", "topk_mask"): (("cpp", "reference"), "cpp measured 27.5x the fastest torch way (20M fp32, 90%, "
                                                 "1 thread)"),
    ("cpu", "product_score"): (("cpp", "reference"), "cpp measured 1.1-1.4x the reference (4M fp32)"),
    ("cpu", "masked_linear"): (("cpp", "reference"), "cpp measured 1.44-1.93x the reference fwd and 1.22-1.57x "
                                                     "fwd+bwd with the score gradient (256 x 40 x 1024 to 256 x 4096 "
                                                     "x 4096, 1 thread): the same ATen GEMMs, the mask applied by "
                                                     "a blend, W*M kept for the backward, faster dW layout for "
                                                     "in < out"),
    ("cpu", "to_sparse"): (("cpp", "reference"), "cpp measured 1.4-1.9x the reference (1024 x 1024, 10%)"),
    ("cpu", "sparse_linear"): (("cpp", "reference"), "cpp measured 2.0x (density 0.3) to 17-85x (0.01) the "
                                                     "reference, a dense matmul (256 x 1024 x 1024)"),
    ("cpu", "sparse_conv"): (("cpp", "reference"), "cpp measured 1.4-11x dense torch forward + backward on every "
                                                   "convolution of bench/results/sparse-conv.md (VGG-19, ResNet-32, "
                                                   "cnn1d / cnn2d layers, 90-99%, 1 thread); the reference is the "
                                                   "dense convolution of the scattered weight"),
}


def public_op(op: str) -> str:
    """The public op a kernel belongs to: masked_linear_fwd and masked_linear_bwd -> masked_linear."""
    return op.removesuffix("_fwd").removesuffix("_bwd")


def order(op: str, device_type: str) -> tuple[tuple[str, ...], str]:
    """The backends tried for `op` on `device_type`, in order, and why."""
    measured = MEASURED.get((device_type, public_op(op)))
    if measured is not None:
        return measured
    return PREFERENCE.get(device_type, ("reference",)), f"the default order on {device_type} (not measured per op)"


class BackendError(RuntimeError):
    """A requested backend cannot run the requested op on the requested device."""


@cache
def _module(name: str) -> ModuleType:
    return importlib.import_module(f"panning.ops.{name}_backend" if name != "reference" else "panning.ops.reference")


def _status(name: str) -> tuple[bool, str]:
    module = _module(name)
    return module.status() if hasattr(module, "status") else (True, "plain torch")


def _devices(name: str) -> tuple[str, ...]:
    return tuple(getattr(_module(name), "DEVICES", ("cpu", "cuda")))


def backends() -> dict[str, dict]:
    """What each backend is, whether it is available here, and why not."""
    report = {}
    for name in BACKENDS:
        available, reason = _status(name)
        module = _module(name)
        report[name] = {
            "available": available,
            "reason": reason,
            "devices": _devices(name),
            "ops": tuple(op for op in OPS if hasattr(module, op)),
            "default_for": {},
        }
    for device_type in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        for op in dict.fromkeys(public_op(op) for op in OPS):
            kernel_op = op if op in OPS else f"{op}_fwd"
            name = _automatic(kernel_op, device_type)
            if name is not None:
                report[name]["default_for"][f"{op} on {device_type}"] = order(kernel_op, device_type)[1]
    return report


def requested(backend: str | None) -> str | None:
    """The backend asked for by argument or by PANNING_BACKEND, validated; None means automatic."""
    name = backend if backend is not None else (os.environ.get("PANNING_BACKEND") or None)
    if name is not None and name not in BACKENDS:
        source = "backend" if backend is not None else "PANNING_BACKEND"
        raise ValueError(f"{source}: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def can_run(name: str, op: str, device_type: str) -> str | None:
    """None if `name` can run `op` on `device_type`, else the reason it cannot."""
    available, reason = _status(name)
    if not available:
        return f"backend {name!r} is not available: {reason}"
    if device_type not in _devices(name):
        return f"backend {name!r} does not run on {device_type} (runs on {', '.join(_devices(name))})"
    if not hasattr(_module(name), op):
        return f"backend {name!r} does not implement {op}"
    return None


def resolve(op: str, device: torch.device, backend: str | None = None) -> str:
    """The name of the backend that will run `op` on `device`."""
    return _resolve(op, device.type, backend)


# Under torch.compile the choice is made once while tracing and baked into the graph as a constant.
@torch.compiler.assume_constant_result
def _resolve(op: str, device_type: str, backend: str | None) -> str:
    name = requested(backend)
    if name is not None:
        why = can_run(name, op, device_type)
        if why is not None:
            raise BackendError(f"{op}: {why}")
        return name
    name = _automatic(op, device_type)
    if name is None:
        raise BackendError(f"{op}: no backend runs on device type {device_type!r}")
    return name


@cache  # backends do not come and go within a process; this runs on every op call
def _automatic(op: str, device_type: str) -> str | None:
    for candidate in order(op, device_type)[0]:
        if can_run(candidate, op, device_type) is None:
            return candidate
    return None


def kernel(op: str, name: str) -> Callable:
    """The kernel function of backend `name` for `op` (resolved beforehand)."""
    return getattr(_module(name), op)


def implements(name: str, kernel_name: str) -> bool:
    """Whether backend `name` has the optional kernel `kernel_name` (e.g. topk_mask_ties, which only the C++
    backend has; the public op computes the same thing in plain torch elsewhere)."""
    return hasattr(_module(name), kernel_name)


def checks_inputs(name: str, op: str) -> bool:
    """Whether backend `name`'s kernel for `op` rejects non-finite inputs itself (saving the public op a pass):
    listed in the backend's CHECKS_INPUTS."""
    return op in getattr(_module(name), "CHECKS_INPUTS", ())


def keeps_masked_weight(name: str) -> bool:
    """Whether backend `name`'s masked_linear_fwd returns W * M for its backward (KEEPS_MASKED_WEIGHT)."""
    return bool(getattr(_module(name), "KEEPS_MASKED_WEIGHT", False))
