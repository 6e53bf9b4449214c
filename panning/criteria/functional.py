"""Evaluate a model at weights given as one flat arena tensor, without touching the model.

Every data-dependent criterion needs the loss (and its derivatives) of the network at some weights
w_eff — the dense weights, or the weights times a mask. Rather than writing into the model, the
criteria build one flat leaf tensor in the arena's layout, split it into per-parameter views and run
the model through `torch.func.functional_call`. The gradient then arrives as one flat tensor in the
arena's layout, and the model (weights, BatchNorm running statistics, train/eval mode) is unchanged.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..arena import Arena

Batch = tuple[torch.Tensor, torch.Tensor]


@contextlib.contextmanager
def mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Put the model in train or eval mode for the block, then restore every module's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def forward(model: nn.Module, arena: Arena, flat: torch.Tensor, x: torch.Tensor,
            others: Mapping[str, torch.Tensor] | None = None,
            buffers: Mapping[str, torch.Tensor] | None = None):
    """model(x) with the arena's weights taken from `flat`, other parameters from `others` (else the
    model's) and buffers from `buffers` (else copies of the model's, so that a forward in train mode does
    not move BatchNorm running statistics). Returns what the model returns (`arena.logits` reads the logits)."""
    weights = dict(others or {})
    weights.update(arena.split(flat))
    if buffers is None:
        buffers = {name: b.clone() for name, b in model.named_buffers()}
    return functional_call(model, (weights, dict(buffers)), (x,))


def loss(model: nn.Module, arena: Arena, flat: torch.Tensor, batch: Batch, *,
         temperature: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of model(x) / temperature at arena weights `flat`, in train mode (batch statistics,
    as the criteria's authors computed them)."""
    x, y = batch
    with mode(model, True):
        return F.cross_entropy(arena.logits(forward(model, arena, flat, x)) / temperature, y)


def loss_grad(model: nn.Module, arena: Arena, flat: torch.Tensor, batch: Batch, *,
              temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, d loss / d flat) at arena weights `flat` (see `loss`); both detached, the gradient flat."""
    leaf = flat.detach().requires_grad_(True)
    value = loss(model, arena, leaf, batch, temperature=temperature)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad
