#!/usr/bin/env bash
# Create ./.venv and install panning into it (editable, compiling panning._C) with everything the
# library, the command line and the tests need.
#
# torch: a torch already importable in .venv is kept (a GPU user installs their CUDA build first:
# see the README); otherwise the pinned CPU build is installed. An unpinned torch would fetch a
# multi-GB CUDA build, so torch always goes in first and pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${PANNING_TORCH:-torch==2.13.0}
TRITON_SPEC=${PANNING_TRITON:-triton==3.7.1}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }

pip install -q --upgrade pip setuptools wheel
.venv/bin/python -c "import torch" 2>/dev/null || pip install -q "$TORCH_SPEC"
.venv/bin/python -c "import triton" 2>/dev/null || pip install -q "$TRITON_SPEC"
# Build requirements, installed here because the build runs without isolation (an isolated build
# would fetch another torch).
pip install -q pybind11 ninja
# torchvision (the tests run its models; panning uses it where installed, see panning/optional.py): the release
# made for this torch (torch 2.N pairs with torchvision 0.(N+15)), without dependencies, so that pip never swaps
# the torch above for the CUDA build that PyPI's torchvision wheels require. Installed before the models extra,
# whose timm would otherwise pull the newest torchvision and, with it, a newer torch.
TORCHVISION_SPEC=${PANNING_TORCHVISION:-$(.venv/bin/python -c \
    "import torch; print(f'torchvision==0.{int(torch.__version__.split(\".\")[1]) + 15}.*')")}
.venv/bin/python -c "import importlib.metadata as m; m.version('torchvision')" 2>/dev/null \
    || pip install -q --no-deps "$TORCHVISION_SPEC"
MAX_JOBS=${MAX_JOBS:-2} pip install -q --no-build-isolation -e ".[test,models]"
