"""The optional libraries panning uses where they are installed: torchvision (its models and ImageFolder), timm and
Hugging Face transformers (their models). None of them is a dependency of panning; :func:`require` imports one on
first use and turns its absence into one ``ImportError`` that says what needs it and what to install.

torchvision beside a CPU-only torch: the torchvision wheels on PyPI are built against the CUDA build of the torch of
the same version, so their compiled ops (``torchvision._C``: nms, roi_align, ...) cannot load beside the CPU build.
torchvision then skips registering them, except for two fake (meta) kernels it registers unconditionally, for
``torchvision::nms`` and ``torchvision::qnms``, and its import stops with "operator torchvision::nms does not
exist". :func:`require` declares the schemas of exactly those two ops (no kernel) and imports it again: the models,
transforms and data sets, which are plain Python, work as usual; ``torchvision.ops.nms`` and the other compiled ops
fail when called, with torchvision's own "Couldn't load custom C++ ops". Where the compiled ops do load (a
torchvision built for the installed torch), nothing is declared.

transformers imports torchvision where it is installed, so :func:`require` imports torchvision first for it too.
transformers 5 imports Hugging Face's ``kernels`` package. panning's source tree has a ``kernels/`` folder of its
own (the Triton kernels, installed as ``panning.kernels``) which shadows that package wherever the tree's root is
on ``sys.path`` (the tests, ``python -m`` or a script run from the root); :func:`require` then imports the installed
``kernels`` from its own location first, so that transformers finds the package it expects.

Imports nothing of panning, so every layer may use it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

#: What to install for each library (the README's "Models of other libraries" says which version fits which torch).
INSTALL = {
    "torchvision": "pip install --no-deps torchvision==<the release made for your torch: 0.28 for torch 2.13>",
    "timm": "pip install timm (after torchvision)",
    "transformers": "pip install transformers",
}
#: The ops torchvision registers fake kernels for even when its compiled ops did not load, with their schemas.
_UNGUARDED_OPS = {name: "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor" for name in ("nms", "qnms")}
_MISSING_OP = re.compile(r"operator torchvision::(\w+) does not exist")


def require(name: str, purpose: str) -> ModuleType:
    """The library `name` (one of :data:`INSTALL`), imported; `purpose` says what needs it in the error when it is
    not installed (e.g. "--model torchvision:resnet18")."""
    try:
        if name == "transformers":
            _import_hub_kernels()
        _import_torchvision(required=name != "transformers")  # timm needs it; transformers uses it if installed
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name not in INSTALL:
            raise
        raise ImportError(f"{purpose} needs {error.name}, which is not installed: {INSTALL[error.name]}") from None


def _import_torchvision(required: bool = True) -> ModuleType | None:
    """torchvision, imported even where its compiled ops do not load (see the module docstring); None where it is
    not installed and not `required`."""
    import torch

    if not required and importlib.util.find_spec("torchvision") is None:
        return None
    declared: set[str] = set()
    while True:
        try:
            return importlib.import_module("torchvision")
        except RuntimeError as error:
            missing = _MISSING_OP.search(str(error))
            if missing is None or missing.group(1) not in _UNGUARDED_OPS or missing.group(1) in declared:
                raise
            op = missing.group(1)
            torch.library.define(f"torchvision::{op}", _UNGUARDED_OPS[op])
            declared.add(op)
            for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[module]  # the failed import left them half-initialized


def _import_hub_kernels() -> None:
    """Hugging Face's ``kernels`` package, imported from where it is installed when the source tree's kernels/
    folder would shadow it (see the module docstring); nothing where it is not installed or not shadowed."""
    try:
        init = Path(importlib.metadata.distribution("kernels").locate_file("kernels/__init__.py"))
    except importlib.metadata.PackageNotFoundError:
        return
    found = importlib.util.find_spec("kernels") if "kernels" not in sys.modules else sys.modules["kernels"].__spec__
    if not init.is_file() or (found is not None and found.origin == str(init)):
        return
    spec = importlib.util.spec_from_file_location("kernels", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module  # before running it: it imports its own submodules as kernels.*
    spec.loader.exec_module(module)
