"""Per-layer cases of the compressed convolution (and the compressed linear) against dense torch and SparseProp.

Each case is one layer at one batch and sparsity, forward alone or forward + backward (x and the weight both
take gradients, as in a middle layer during training). Variants, timed side by side:
- `ours`: panning.ops.sparse_conv2d / sparse_conv1d / sparse_linear, gradients to the kept values only;
- `dense`: the torch layer (nn.Conv2d / nn.Conv1d / nn.Linear) holding the masked weight;
- `SparseProp` and `SparseProp width`: SparseProp's SparseConv2d (IST-DASLab, ICML 2023, the public CPU
  sparse-backprop library) vectorized over the batch and over the output width; its SparseLinear for Linear.
  The table compares ours with the faster of its two. SparseProp has no Conv1d and only square kernels with
  stride 1 or 2, so those cases have no SparseProp variant.

SparseProp is a benchmark-only dependency (`pip install --no-build-isolation -e '.[bench]'`); without it its
variants are skipped with the reason (`MISSING`). The layers: the convolutions of VGG-19 and ResNet-32 on CIFAR
(one of each distinct shape class, 32x32 input), those of the protocol's cnn1d / cnn2d (panning/models/cnn.py),
and Linear 768->3072 and 4096->4096.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from panning import ops
from panning.cli import bench_run as bench

try:
    from sparseprop.modules.conv2d import SparseConv2d as _SparsePropConv2d
    from sparseprop.modules.linear import SparseLinear as _SparsePropLinear
    MISSING = ""
except ImportError as error:
    MISSING = f"sparseprop is not installed ({error}); pip install --no-build-isolation -e '.[bench]'"

SPARSITIES = (0.90, 0.95, 0.98, 0.99)
SPARSEPROP = ("SparseProp", "SparseProp width")


@dataclass(frozen=True)
class Layer:
    """One layer shape: a convolution over `size` (an int per spatial dimension) or a Linear (size ())."""

    name: str
    cin: int
    cout: int
    size: tuple[int, ...]
    kernel: int = 3
    stride: int = 1
    padding: int = 1

    @property
    def kind(self) -> str:
        return {0: "linear", 1: "conv1d", 2: "conv2d"}[len(self.size)]

    def sparseprop(self) -> tuple[str, ...]:
        """The SparseProp variants that can run this layer."""
        if self.kind == "linear":
            return SPARSEPROP[:1]
        return SPARSEPROP if self.kind == "conv2d" and self.stride in (1, 2) else ()

    def label(self) -> str:
        if self.kind == "linear":
            return f"{self.name} {self.cin}->{self.cout}"
        size = "x".join(map(str, self.size))
        return f"{self.name} {self.cin}->{self.cout} {size} k{self.kernel} s{self.stride}"


VGG19 = [Layer("VGG-19", 64, 64, (32, 32)), Layer("VGG-19", 128, 128, (16, 16)), Layer("VGG-19", 256, 256, (8, 8)),
         Layer("VGG-19", 512, 512, (4, 4)), Layer("VGG-19", 512, 512, (2, 2))]
RESNET32 = [Layer("ResNet-32", 32, 32, (32, 32)), Layer("ResNet-32", 32, 64, (32, 32), stride=2),
            Layer("ResNet-32", 32, 64, (32, 32), kernel=1, stride=2, padding=0), Layer("ResNet-32", 64, 64, (16, 16)),
            Layer("ResNet-32", 128, 128, (8, 8))]
CNN = [Layer("cnn2d", 32, 32, (8, 8)), Layer("cnn2d", 64, 64, (4, 4)),
       Layer("cnn1d", 1, 25, (40,), kernel=5, stride=2), Layer("cnn1d", 25, 25, (19,), kernel=3, stride=2)]
LINEAR = [Layer("Linear", 768, 3072, ()), Layer("Linear", 4096, 4096, ())]
LAYERS = VGG19 + RESNET32 + CNN + LINEAR
LARGE_BATCH = [VGG19[0], RESNET32[1]]  # the subset also run at batch 128


def _targets(layer: Layer, batch: int, sparsity: float, backward: bool) -> tuple[bench.Target, ...]:
    """Forward + backward: at least SparseProp's speed on every layer it runs, and on VGG's 3x3 convolutions at
    batch 32 at least 3x dense at 95% and 6x at 98%."""
    if not backward:
        return ()
    targets = (bench.Target("SparseProp", 1.0),) if layer.sparseprop() and not MISSING else ()
    dense = {0.95: 3.0, 0.98: 6.0}.get(sparsity)
    if layer.name == "VGG-19" and batch == 32 and dense:
        targets += (bench.Target("dense", dense),)
    return targets


def layer_case(layer: Layer, batch: int, sparsity: float, backward: bool) -> bench.Case:
    def build():
        g = torch.Generator().manual_seed(0)
        kernel = (layer.kernel,) * len(layer.size)
        weight = torch.randn(layer.cout, layer.cin, *kernel, generator=g) / (layer.cin * layer.kernel) ** 0.5
        mask = torch.rand(weight.shape, generator=g) >= sparsity
        weight = weight * mask
        x = torch.randn(batch, layer.cin, *layer.size, generator=g).requires_grad_(backward)
        sw = ops.to_sparse(weight.reshape(layer.cout, -1), mask.reshape(layer.cout, -1))
        sw = sw.with_values(sw.values.clone().requires_grad_(backward))
        geometry = dict(stride=layer.stride, padding=layer.padding)
        if layer.kind == "linear":
            dense = nn.Linear(layer.cin, layer.cout, bias=False)
            ours = lambda: ops.sparse_linear(x, sw)  # noqa: E731
        elif layer.kind == "conv1d":
            dense = nn.Conv1d(layer.cin, layer.cout, layer.kernel, bias=False, **geometry)
            ours = lambda: ops.sparse_conv1d(x, sw, kernel_size=layer.kernel, **geometry)  # noqa: E731
        else:
            dense = nn.Conv2d(layer.cin, layer.cout, layer.kernel, bias=False, **geometry)
            ours = lambda: ops.sparse_conv2d(x, sw, kernel_size=layer.kernel, **geometry)  # noqa: E731
        dense.weight.data.copy_(weight)
        dense.weight.requires_grad_(backward)
        modules = {"ours": ours, "dense": dense}
        if not MISSING:
            for name in layer.sparseprop():
                if layer.kind == "linear":
                    modules[name] = _SparsePropLinear(weight.clone())
                else:
                    modules[name] = _SparsePropConv2d(weight.clone(), None, layer.padding, layer.stride,
                                                      vectorizing_over_on=name == "SparseProp width")
        with torch.no_grad():
            dy = torch.randn_like(dense(x))

        def step(fn):
            if not backward:
                return lambda: fn(x) if fn is not ours else fn()
            return lambda: (fn(x) if fn is not ours else fn()).backward(dy)
        return {name: step(fn) for name, fn in modules.items()}

    what = "fwd+bwd" if backward else "fwd"
    names = ("ours", "dense") + layer.sparseprop()
    return bench.Case(f"{layer.label()} b{batch} {sparsity:.0%} {what}", names, build,
                      _targets(layer, batch, sparsity, backward))


def cases(quick: bool) -> list[bench.Case]:
    """Every case; `quick`: a few small ones (a smoke test of the suite)."""
    if quick:
        layers = [(Layer("VGG-19", 16, 16, (8, 8)), 16), (Layer("cnn1d", 4, 5, (19,), stride=2), 16),
                  (Layer("Linear", 64, 96, ()), 16)]
        return [layer_case(layer, batch, 0.95, backward) for layer, batch in layers for backward in (False, True)]
    found = []
    for layer, batch in [(layer, 32) for layer in LAYERS] + [(layer, 128) for layer in LARGE_BATCH]:
        for sparsity in SPARSITIES:
            found += [layer_case(layer, batch, sparsity, backward) for backward in (True, False)]
    return found


def row(case: bench.Case, best: dict[str, float]) -> dict:
    """panning.cli.bench_run.row with SparseProp's two variants folded into the faster one, and targets whose baseline
    did not run left out."""
    best = dict(best)
    if "SparseProp width" in best:
        width = best.pop("SparseProp width")
        best["SparseProp"] = min(best.get("SparseProp", width), width)
    targets = tuple(t for t in case.targets if t.baseline in best)
    return bench.row(bench.Case(case.group, case.names, case.build, targets), best)
