"""Batched, generator-driven image augmentation for training batches (the standard CIFAR recipe)."""
from __future__ import annotations

import torch


def crop_flip(x: torch.Tensor, generator: torch.Generator, *, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``padding`` pixels, then a random horizontal flip, per image.

    ``x`` is (B, C, H, W) and already normalized, so the zero padding is the mean colour. The random draws come
    from ``generator`` (a CPU generator) so that a seed fixes them, on any device.
    """
    b, _, h, w = x.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = (shifts[0, :, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = shifts[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
