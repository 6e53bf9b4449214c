"""Optional stage after a search: train the kept weights with the mask fixed (panning.train)."""
from __future__ import annotations

from torch import nn

from ..nn import SparseLayer
from ..train import train
from .searching import SearchResult


def finetune(result: SearchResult, data, *, epochs: int = 10, lr: float = 0.01, momentum: float = 0.9,
             weight_decay: float = 0.0, batch_size: int = 256, seed: int = 0, checkpoint=None,
             resume: bool = True, progress: bool = True):
    """End the search on `result.model` (its sparse layers drop their scores and zero the pruned weights) and
    train its kept weights under `result.masks`.

    Defaults follow the jackpot paper's optional stage: SGD lr 0.01 (cosine), 10 epochs, no weight decay.
    Unlike the search this changes the weights, in place. Returns (model, panning.train.TrainResult).
    """
    model: nn.Module = result.model
    for layer in model.modules():
        if isinstance(layer, SparseLayer) and any(layer.scores_of(name) is not None for name in layer.MASKED):
            layer.remove_scores()
            for weight in layer.masked_parameters().values():
                weight.requires_grad_(True)
    device = next(model.parameters()).device
    outcome = train(model, data, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                    weight_decay=weight_decay, optimizer="sgd", schedule="cosine", masks=result.masks,
                    device=device, seed=seed, checkpoint=checkpoint, resume=resume, progress=progress)
    return model, outcome
