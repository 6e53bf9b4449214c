"""panning.optional.require: the optional libraries, a clear error where one is missing, torchvision beside a
CPU-only torch, Hugging Face's kernels package beside the source tree's kernels/ folder."""
from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch

from panning.optional import INSTALL, require


def test_a_missing_library_is_one_error_saying_what_needs_it_and_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import of it fails as if not installed
    with pytest.raises(ImportError, match="--model x:y needs transformers, which is not installed: pip install "
                                          "transformers"):
        require("transformers", "--model x:y")
    assert set(INSTALL) == {"torchvision", "timm", "transformers"}


def test_torchvision_imports_and_builds_its_models_whether_or_not_its_compiled_ops_load():
    torchvision = require("torchvision", "this test")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    boxes, scores = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1.1]]), torch.tensor([0.9, 0.8])
    if torchvision.extension._has_ops():  # a torchvision built for this torch: its ops work
        assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0]
    else:  # beside a CPU-only torch: only the compiled ops fail, with torchvision's own message
        with pytest.raises(RuntimeError, match="Couldn't load custom C\\+\\+ ops"):
            torchvision.ops.nms(boxes, scores, 0.5)
    assert require("torchvision", "this test") is torchvision and require("timm", "this test").create_model


def test_transformers_gets_the_installed_kernels_package_not_the_source_trees_folder():
    require("transformers", "this test")
    try:
        installed = importlib.metadata.distribution("kernels").locate_file("kernels/__init__.py")
    except importlib.metadata.PackageNotFoundError:  # transformers 4 does not need it
        return
    assert Path(sys.modules["kernels"].__file__) == Path(installed)
    from panning import kernels  # the Triton kernels keep their own name

    assert Path(kernels.__file__).parent.name == "kernels" and "site-packages" not in kernels.__file__
