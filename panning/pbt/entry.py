"""`panning.prune`, the entry point of pruning before training: any method of panning.pbt, returning Masks."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .. import adapter, checks
from ..arena import Arena, prunable
from ..criteria import arguments
from ..data import Data, DataBundle, split
from ..masks import Masks
from ..sparsity import keep_count
from .methods import METHODS, Problem, PruneConfig


def prune(model: nn.Module, method: str = "panning", sparsity: float = 0.9, data: Data | None = None,
          *, seed: int = 0, include: Callable[[str, nn.Module], bool] = prunable, input_shape=None,
          logits: adapter.Logits = adapter.logits, progress: bool = False, **options) -> Masks:
    """Masks that keep round(N * (1 - sparsity)) of the N prunable weights of `model`, chosen by `method`.

    method: one of panning.pbt.METHODS — "random", "magnitude", "snip", "grasp", "synflow",
        "iterative_snip", "force", "panning", "rl_panning" (needs agent=, see panning.pbt.rl.agent).
    sparsity: the fraction of weights to remove, in [0, 1).
    data: a DataBundle (its training split is used), a Dataset of (input, label) items or a DataLoader of
        (inputs, labels) batches, read once into memory (panning.data.split); required by the
        data-dependent methods, which draw class-balanced batches from it.
    seed: seeds every random draw (random scores, batches), so a seed gives the same masks.
    include: the Arena filter of prunable layers (default panning.adapter.prunable: every Linear/Conv weight,
        subclasses included, attention projections, Hugging Face's Conv1D; see docs/adapter.md, and
        panning.arena.except_last to keep the classifier dense).
    input_shape: one sample's shape, needed by SynFlow without data (else taken from the data); token ids
        for a model with an nn.Embedding.
    logits: picks the class scores out of the model's output (default: the output itself, its first element,
        or its `.logits`).
    options: per method (see METHODS[method].defaults): iterations (iterative methods, default 100),
        per_class (samples per class of each batch, default 10), temperature (GraSP, Panning: default 200),
        indices (Panning: "authors", default, or the "nonnegative" ablation), rounding (Panning's kept
        counts: "nearest", default, or the authors' "floor"; see docs/pbt.md), agent (rl_panning: the path
        of an agent saved by panning.pbt.rl.agent.save_agent).

    The method, the sparsity, the seed and the options are checked as one PruneConfig (an option the method does
    not take is refused); the model is not modified: criteria evaluate it at weights held in a separate arena
    buffer.
    """
    config = PruneConfig(method=method, sparsity=sparsity, seed=seed, **options)
    spec, values, sparsity = METHODS[method], config.options, float(sparsity)
    dataset, shape = _resolve_data(data, input_shape, method, spec.needs_data)
    arena = Arena(model, include=include, share=False, logits=logits)
    if shape is not None:
        arguments.takes_samples(model, shape, "data" if input_shape is None else "input_shape",
                              data.num_classes if isinstance(data, DataBundle) else None)
    checks.keeps_weights("sparsity", sparsity, keep_count(arena.numel, sparsity), arena.numel)
    with tqdm(total=spec.steps(values), desc=method, disable=None if progress else True, leave=False) as bar:
        problem = Problem(model, arena, dataset, shape, sparsity, torch.Generator().manual_seed(seed),
                          on_step=lambda step, mask: bar.update(step + 1 - bar.n))
        mask = spec.run(problem, **values)
    return Masks.from_flat(arena, mask)


def _resolve_data(data, input_shape, method: str, needs_data: bool) -> tuple[Dataset | None, tuple[int, ...]]:
    """(training dataset or None, one sample's shape) from the `data` and `input_shape` arguments."""
    if isinstance(data, DataBundle):
        dataset, shape = data.train, data.input_shape
    elif data is None:
        dataset, shape = None, None
    else:
        dataset = split(data).train
        shape = tuple(dataset.tensors[0].shape[1:])
    if input_shape is not None:
        shape = arguments.input_shape(input_shape)
    if dataset is None and (needs_data or shape is None and method == "synflow"):  # SynFlow: data or a shape
        needed = "data" if needs_data else "input_shape"
        raise ValueError(f"{needed}: method {method!r} needs data (a DataBundle, a Dataset or a DataLoader)"
                         f"{'' if needs_data else ' or the input shape (one sample, no batch)'}")
    return dataset, shape
