"""The sparse layers on a CUDA GPU (Triton masked and compressed kernels) against the same layers on the CPU.

They run only where a CUDA GPU is visible (scripts/gpu_check.sh runs them there); elsewhere they skip and say
why: the kernels themselves are checked on the CPU under the Triton interpreter (tests/ops/). float64 keeps
TF32 and reduction order out of the comparison.
"""
from __future__ import annotations

import copy

import pytest
import torch

from panning import ops
from panning.nn import layers, sparsify
from tests.nn.test_nn import inputs, masked_copy, net, random_masks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
CUDA = torch.device("cuda")


def test_the_triton_kernels_run_the_sparse_layers_on_a_gpu():
    assert ops.dispatch.resolve("masked_linear_fwd", CUDA) == "triton"
    assert ops.dispatch.resolve("sparse_linear_fwd", CUDA) == "triton"
    assert layers.compiled_sparse_kernel("cuda", "sparse_linear_fwd")  # auto mode may take the compressed path


@pytest.mark.parametrize("mode", ["masked", "compressed", "auto"])
def test_forward_and_gradients_on_the_gpu_match_the_cpu(mode):
    dense, masks = net().double(), random_masks(net(), keep=0.1)
    reference = masked_copy(dense, masks)
    sparse = sparsify(copy.deepcopy(dense), masks, mode=mode).to(CUDA)
    assert sparse[6].path == ("masked" if mode == "masked" else "compressed")
    x = inputs().double()
    y_ref, y = reference(x), sparse(x.to(CUDA))
    torch.testing.assert_close(y.cpu(), y_ref)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    for (name, p_ref), p in zip(reference.named_parameters(), sparse.parameters()):
        expected = p_ref.grad * masks[name] if name in masks else p_ref.grad
        torch.testing.assert_close(p.grad.cpu(), expected)


@pytest.mark.parametrize("mode", ["masked", "compressed"])
def test_masked_weights_stay_exactly_zero_through_training_on_the_gpu(mode):
    masks = random_masks(net())
    model = sparsify(net(), masks, mode=mode).to(CUDA)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    for step in range(3):
        loss = model(inputs(seed=step).to(CUDA)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, param in model.named_parameters():
        if name in masks:
            assert not param[~masks[name].to(CUDA)].any(), name
            assert param[masks[name].to(CUDA)].ne(0).all(), name


def test_scores_get_the_straight_through_gradient_on_the_gpu():
    cpu_layer = layers.SparseLinear(12, 9).double()
    cpu_layer.set_mask(torch.rand(9, 12, generator=torch.Generator().manual_seed(3)) < 0.5)
    gpu_layer = copy.deepcopy(cpu_layer).to(CUDA)
    for layer in (cpu_layer, gpu_layer):
        layer.attach_scores()
    x = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    cpu_layer(x).square().sum().backward()
    gpu_layer(x.to(CUDA)).square().sum().backward()
    torch.testing.assert_close(gpu_layer.scores.grad.cpu(), cpu_layer.scores.grad)
    dw_eff = 2 * cpu_layer(x).detach().t() @ x  # d(sum y^2)/dW_eff, by hand
    torch.testing.assert_close(cpu_layer.scores.grad, dw_eff * cpu_layer.weight.detach())
