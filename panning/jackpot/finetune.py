"""Optional stage after a search: train the kept weights with the mask fixed (panning.train)."""
from __future__ import annotations

from torch import nn

from ..train import train
from .search import SearchResult


def finetune(result: SearchResult, data, *, epochs: int = 10, lr: float = 0.01, momentum: float = 0.9,
             weight_decay: float = 0.0, batch_size: int = 256, seed: int = 0, checkpoint=None,
             resume: bool = True, progress: bool = True):
    """Unwrap `result.model` (if still wrapped) and train its weights under `result.masks` (pruned ones held
    at zero).

    Defaults follow the jackpot paper's optional stage: SGD lr 0.01 (cosine), 10 epochs, no weight decay.
    Unlike the search this changes the weights, in place. Returns (plain model, panning.train.TrainResult).
    """
    if not isinstance(result, SearchResult):
        raise TypeError(f"result: expected a SearchResult from panning.jackpot.search, got {type(result).__name__}")
    device = result.model.scores.device
    model: nn.Module = result.model.unwrap() if result.model.layers else result.model.model
    outcome = train(model, data, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                             weight_decay=weight_decay, optimizer="sgd", schedule="cosine", masks=result.masks,
                             device=device, seed=seed, checkpoint=checkpoint, resume=resume,
                             progress=progress)
    return model, outcome
