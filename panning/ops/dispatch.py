"""The one place that decides which backend runs an op.

A backend is a module exposing `status() -> (available, reason)`, `DEVICES` (device types it runs
on), and one kernel function per op it implements (see `reference.py` for the kernel contract).
Kernels are looked up by op name, so a backend implements any subset of the ops.

Selection: an explicit `backend=` argument, else the `PANNING_BACKEND` environment variable, else
the first available backend in `PREFERENCE[device type]` that implements the op. An explicitly
requested backend that cannot run the op raises; nothing falls back silently.
"""
from __future__ import annotations

import importlib
import os
from functools import lru_cache
from types import ModuleType
from typing import Callable

import torch

BACKENDS = ("reference", "cpp", "triton", "cuda")
PREFERENCE = {
    "cpu": ("cpp", "reference"),
    "cuda": ("cuda", "triton", "reference"),
}
OPS = ("saliency", "product_score", "topk_mask", "masked_linear_fwd", "masked_linear_bwd",
       "to_sparse", "sparse_linear_fwd", "sparse_linear_bwd")


class BackendError(RuntimeError):
    """A requested backend cannot run the requested op on the requested device."""


@lru_cache(maxsize=None)
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
        }
    return report


def requested(backend: str | None) -> str | None:
    """The backend asked for by argument or by PANNING_BACKEND, validated; None means automatic."""
    name = backend if backend is not None else (os.environ.get("PANNING_BACKEND") or None)
    if name is not None and name not in BACKENDS:
        source = "backend" if backend is not None else "PANNING_BACKEND"
        raise ValueError(f"{source}: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def _can_run(name: str, op: str, device_type: str) -> str | None:
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
        why = _can_run(name, op, device_type)
        if why is not None:
            raise BackendError(f"{op}: {why}")
        return name
    for candidate in PREFERENCE.get(device_type, ("reference",)):
        if _can_run(candidate, op, device_type) is None:
            return candidate
    raise BackendError(f"{op}: no backend runs on device type {device_type!r}")


def kernel(op: str, name: str) -> Callable:
    """The kernel function of backend `name` for `op` (resolved beforehand)."""
    return getattr(_module(name), op)


def checks_nan(name: str) -> bool:
    """Whether the backend's top-k kernel rejects NaN scores itself (saving a separate pass)."""
    return bool(getattr(_module(name), "CHECKS_NAN", False))
