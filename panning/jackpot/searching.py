"""Lottery-jackpot search: learn per-weight scores over frozen pre-trained weights; the mask is their top-k.

`search(model, data, sparsity=0.9)` swaps the searched layers of `model` for panning.nn sparse layers with
scores (in place, see `space.SearchSpace`), sets per-layer budgets from one global magnitude threshold,
starts the scores at the magnitude mask, re-estimates the BatchNorm statistics for it, and runs SGD on the
scores. After every optimizer step the mask is one segmented `panning.ops.topk_mask` over the whole arena
(offsets and budgets live on the host: no Python loop over layers, no device synchronization), optionally
filtered by the short restriction. Two presets (docs/jackpot.md):

- "safe" (default): scores start at |w| (margins scale with the weights), BatchNorm running statistics are
  re-estimated for the start mask (one pass, no weight update), lr 0.1 with a per-step cosine, short
  restriction, budgets rounded to the nearest count.
- "authors": the released code of Zhang, Lin et al. step for step: the flat start (1 kept, 0.99 pruned),
  lr 0.1 with a cosine stepped per epoch, no extra BatchNorm pass, the plain per-layer top-k refresh (their
  code's restriction rate is ceil((1 - e/E)^4) = 1, so every proposed swap is taken), and their floor
  rounding of the budgets.
Both use SGD momentum 0.9, weight decay 5e-4, batch 256. Arguments given explicitly override the preset.

Loss-rise monitor (`monitor=True`): after each mask update the same batch is run again (train mode, BatchNorm
running statistics left alone) and compared with the loss of the step's own forward, which saw the old
mask; a *rise* is a step whose mask changed and whose loss on that batch went up. It costs one more forward.

Under `torch.distributed` (e.g. `torchrun --nproc_per_node=2`, gloo on CPU) the scores are trained with
DistributedDataParallel and a DistributedSampler: `batch_size` is the global batch, split evenly over the
ranks; the all-reduced score gradient is identical on every rank, so the masks are too. BatchNorm uses
per-rank batch statistics (standard DDP), so with BatchNorm the result differs from a single process.

Checkpoints (atomic, `weights_only` loading) hold the scores, mask, optimizer, schedule, RNG, BatchNorm
buffers, counters and position; a resumed search ends with the same masks as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from .. import checkpoint as checkpoints, checks, ops
from ..adapter import Logits, logits as logits_of
from ..arena import except_last, prunable
from ..config import (
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    EPOCHS as EPOCHS_SETTING,
    LR,
    MOMENTUM,
    SEED,
    SPARSITY,
    WEIGHT_DECAY,
    Config,
    ConfigError,
    one_of,
    setting,
)
from ..data import Data
from ..io import derived_generator, save_tensors
from ..masks import Masks
from ..sparsity import BUDGETS, layer_budgets
from ..train import Loop, cosine, evaluate, loop_data, reestimate_batchnorm
from .budget import INITS, initial_scores, magnitude_mask
from .restriction import rate, short_restriction, top_k_refresh
from .space import SearchSpace

RESTRICTIONS = ("short", "none")
SCHEDULES = ("step", "epoch")  # cosine per step, or per epoch
#: The settings each preset gives the arguments left at None (docs/jackpot.md, "Presets").
PRESETS = {
    "safe": dict(init="magnitude", lr=0.1, restriction="short", bn_reestimation=True, schedule="step",
                 rounding="nearest"),
    "authors": dict(init="flat", lr=0.1, restriction="none", bn_reestimation=False, schedule="epoch",
                    rounding="floor"),
}
CHECKPOINT_KIND = "jackpot search"
COUNTERS = ("proposed", "admitted", "updates", "rises")
#: The search budget when neither epochs nor steps is given.
EPOCHS = 10


def _world_size() -> int:
    """The processes a search runs on: the process group's, or torchrun's before the group is joined."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class SearchConfig(Config):
    """What a search does, every setting checked once when the configuration is built (panning.config).

    sparsity: the fraction of the searched weights removed, in [0, 1). The budget: `epochs` (default 10) or
    `steps` (optimizer steps; the last epoch may be partial), not both. preset: "safe" | "authors" (module doc);
    init ("magnitude" | "flat" | "random"), lr, restriction ("short" | "none") and bn_reestimation override it
    (None: the preset's; `settings` resolves them). budget: "global" (one magnitude threshold) | "uniform";
    include_classifier: search the last layer too. batch_size: the global batch, split evenly over the
    processes. monitor: count loss rises after mask updates. seed: the search's data order and random start.
    checkpoint_every: steps between checkpoints (default: every epoch); max_steps: stop (checkpointed) after this
    many steps in total, for a later call to go on.
    """

    sparsity: float = SPARSITY.field()
    epochs: int | None = EPOCHS_SETTING.field(None)
    steps: int | None = setting(None, check=checks.positive_int)
    preset: str = setting("safe", check=one_of(PRESETS))
    init: str | None = setting(None, check=one_of(INITS))
    lr: float | None = LR.field(None)
    restriction: str | None = setting(None, check=one_of(RESTRICTIONS))
    bn_reestimation: bool | None = setting(None, check=one_of((True, False)))
    budget: str = setting("global", check=one_of(BUDGETS))
    include_classifier: bool = setting(False, check=one_of((True, False)))
    batch_size: int = BATCH_SIZE.field(256)
    momentum: float = MOMENTUM.field(0.9)
    weight_decay: float = WEIGHT_DECAY.field(5e-4)
    monitor: bool = setting(False, check=one_of((True, False)))
    seed: int = SEED.field(0)
    checkpoint_every: int | None = CHECKPOINT_EVERY.field(None)
    max_steps: int | None = setting(None, check=checks.non_negative_int)

    def relate(self) -> None:
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("steps", f"give the budget as epochs or as steps, not both (got epochs={self.epochs!r}, "
                                       f"steps={self.steps!r})")
        if self.batch_size % _world_size():
            raise ConfigError("batch_size", f"{self.batch_size} does not split evenly over {_world_size()} processes")

    @property
    def settings(self) -> dict:
        """The preset's settings with the explicitly given (not None) ones on top."""
        given = dict(init=self.init, lr=self.lr, restriction=self.restriction, bn_reestimation=self.bn_reestimation)
        return {**PRESETS[self.preset], **{name: value for name, value in given.items() if value is not None}}


@dataclass(frozen=True)
class EpochRecord:
    """One search epoch. Losses are per-sample means, accuracies fractions; counters are this epoch's."""

    epoch: int  # 1-based
    lr: float  # learning rate of the next step
    train_loss: float
    train_acc: float
    test_loss: float  # NaN without test data
    test_acc: float
    proposed: int  # candidate pairs (revival, removal) proposed by the top-k of the new scores
    admitted: int  # pairs that swapped (= proposed without restriction)
    updates: int  # steps that changed the mask
    rises: int  # of those, steps whose loss on the same batch went up (monitor=True; else 0)
    seconds: float


#: The format marker of a scores file (the key "format" of its metadata).
SCORES_FORMAT = "panning.scores/1"


@dataclass
class SearchResult:
    """What `search` found. `model` is the searched model, its layers swapped for panning.nn sparse layers
    with scores that wear `masks` (weights untouched; `panning.densify(model)` gives a plain model with the
    pruned weights zeroed, `finetune` trains the kept ones)."""

    masks: Masks
    model: nn.Module
    scores: dict[str, torch.Tensor]
    budgets: dict[str, int]
    settings: dict  # the resolved settings (preset applied)
    initial_test_loss: float  # the start mask (after the BatchNorm re-estimation, if any) on the test set
    initial_test_acc: float
    history: list[EpochRecord] = field(default_factory=list)
    steps: int = 0
    completed: bool = True  # False when stopped early by max_steps

    def counters(self) -> dict[str, int]:
        return {name: sum(getattr(r, name) for r in self.history) for name in COUNTERS}

    def save(self, directory: str | os.PathLike, **about) -> None:
        """Write masks.safetensors (saying what it was made for: `about`) and scores.safetensors into `directory`
        (atomically each)."""
        directory = Path(directory)
        Masks(self.masks, about).save(directory / "masks.safetensors")
        save_tensors({name: s.contiguous().cpu() for name, s in self.scores.items()},
                     directory / "scores.safetensors", metadata={"format": SCORES_FORMAT, "about": json.dumps(about)})


# ---------------------------------------------------------------------------------------------
# one step


@contextlib.contextmanager
def _batchnorm_statistics_frozen(modules: list[_BatchNorm]):
    """Train-mode BatchNorm on batch statistics without touching the running statistics."""
    saved = [m.track_running_stats for m in modules]
    for m in modules:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, flag in zip(modules, saved):
            m.track_running_stats = flag


class Searcher:
    """The per-step machinery of a search over a `SearchSpace`: SGD and its cosine schedule on the scores,
    the mask refresh (plain top-k or the short restriction), and device-side counters.

    k: (S,) host int64 budgets; total_steps: T of the schedule and of r_t; steps_per_epoch: given, the cosine
    is stepped per epoch (the authors' schedule), else per step. `forward` is the module the step runs (the
    model, or a DistributedDataParallel around it). Arguments are checked by `search`.
    """

    def __init__(self, space: SearchSpace, k: torch.Tensor, *, total_steps: int, restriction: str = "short",
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4, monitor: bool = False,
                 steps_per_epoch: int | None = None, forward: nn.Module | None = None,
                 logits: Logits = logits_of):
        self.space = space
        self.logits = logits
        self.forward = forward if forward is not None else space.model
        self.k = k.to("cpu", torch.int64)
        self.offsets = space.arena.offsets
        self.total_steps = total_steps
        self.restriction = restriction
        self.monitor = monitor
        self.t = 0
        # Nesterov off: the SGD step then leaves .grad as it is, which the restriction reads afterwards.
        self.optimizer = torch.optim.SGD(space.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine(total_steps, steps_per_epoch))
        self.counters = torch.zeros(len(COUNTERS), dtype=torch.int64, device=space.arena.device)
        self._batchnorms = [m for m in space.model.modules() if isinstance(m, _BatchNorm)]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One search step on a batch: (detached mean loss, logits) of the forward under the old mask."""
        if self.t >= self.total_steps:
            raise RuntimeError(f"step: the schedule of {self.total_steps} steps is over")
        space = self.space
        logits = self.logits(self.forward(x))
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        with torch.no_grad():
            old = space.mask.clone()
            if self.restriction == "short":
                proposed = top_k_refresh(old, space.scores, self.k, self.offsets, space.segment)
                new, pairs, admitted = short_restriction(old, proposed, space.scores, space.score_grad(),
                                                         self.offsets, rate(self.t, self.total_steps))
            else:
                new = top_k_refresh(old, space.scores, self.k, self.offsets, space.segment)
                pairs = admitted = (new & ~old).sum()
            space.set_mask(new)
            changed = admitted > 0
            self.counters[0] += pairs
            self.counters[1] += admitted
            self.counters[2] += changed
            if self.monitor:
                with _batchnorm_statistics_frozen(self._batchnorms):
                    after = F.cross_entropy(self.logits(space.model(x)), y)
                pair = torch.stack([loss.detach(), after])
                if dist.is_initialized() and dist.get_world_size() > 1:
                    dist.all_reduce(pair)
                self.counters[3] += changed & (pair[1] > pair[0])
        self.t += 1
        return loss.detach(), logits.detach()

    def state_dict(self) -> dict:
        return {"t": self.t, "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "counters": self.counters.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.counters.copy_(state["counters"])
        self.t = int(state["t"])


# ---------------------------------------------------------------------------------------------
# the search


def search(model: nn.Module, data: Data, config: SearchConfig | None = None, *,
           test: Dataset | DataLoader | None = None, checkpoint: str | os.PathLike | None = None, resume: bool = True,
           progress: bool = True, logits: Logits = logits_of, **settings) -> SearchResult:
    """Search a lottery jackpot in the pre-trained `model` as `config` says (a :class:`SearchConfig`; or its
    fields as keywords, ``search(model, data, sparsity=0.9, epochs=10)``, which also override a given config's);
    the model's layers are swapped in place for sparse layers with scores, its weights untouched.

    data: a DataBundle (searched on .train, evaluated on .test after every epoch), or a Dataset of (input, label)
    items or a DataLoader of (inputs, labels) batches to search on (then `test`, the same kinds, is optional;
    given, it replaces a bundle's test split); either is read once into memory (panning.data.split). The model
    runs where its parameters are. checkpoint: file written every `config.checkpoint_every` steps (default: every
    epoch) and at the end; with `resume` an existing one is continued. logits: picks the class scores out of the
    model's output (default: panning.adapter.logits). All arguments are checked before any work.
    """
    config = SearchConfig(**settings) if config is None else dataclasses.replace(config, **settings)
    checks.instance("checkpoint", checkpoint, (str, os.PathLike, type(None)), "a file path")
    train, test, augment, data_name = loop_data(model, data, test, logits)
    settings = config.settings
    sparsity, batch_size, seed = config.sparsity, config.batch_size, config.seed
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
    space = SearchSpace(model, prunable if config.include_classifier else except_last(model))
    device = space.arena.device
    try:  # a search that fails gives the model back as it was given
        k = layer_budgets(space.arena, sparsity, budget=config.budget, rounding=settings["rounding"])
        checks.keeps_weights("sparsity", sparsity, int(k.sum()), space.arena.numel)
        space.set_scores(initial_scores(space.arena, k, settings["init"], generator=derived_generator(seed, 1)))
        space.set_mask(magnitude_mask(space.arena, k) if settings["init"] != "random"
                       else ops.topk_mask(space.scores, k, offsets=space.arena.offsets))
        sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        local_batch = batch_size // world
        steps_per_epoch = math.ceil(len(sampler) / local_batch)
        total = config.steps if config.steps is not None else (config.epochs or EPOCHS) * steps_per_epoch
        forward = space.model
        if world > 1:
            forward = nn.parallel.DistributedDataParallel(
                space.model, device_ids=[device.index] if device.type == "cuda" else None)
        searcher = Searcher(space, k, total_steps=total, restriction=settings["restriction"], lr=settings["lr"],
                            momentum=config.momentum, weight_decay=config.weight_decay, monitor=config.monitor,
                            forward=forward, logits=logits,
                            steps_per_epoch=steps_per_epoch if settings["schedule"] == "epoch" else None)
        run = dict(sparsity=sparsity, total_steps=total, **settings, budget=config.budget,
                   include_classifier=config.include_classifier, batch_size=batch_size, momentum=config.momentum,
                   weight_decay=config.weight_decay, monitor=config.monitor, seed=seed, world=world,
                   data=data_name, train_size=len(train), names=list(space.names), k=k.tolist(),
                   pretrained_weights=space.arena.weights.detach().double().abs().sum().item())  # their sum of |w|
        x_train, y_train = (t.to(device) for t in train.tensors)
        history: list[EpochRecord] = []
        loop = Loop(total=total, steps_per_epoch=steps_per_epoch, device=device)
        if checkpoint is not None and resume and os.path.exists(checkpoint):
            state = checkpoints.load(checkpoint, CHECKPOINT_KIND, run)
            space.set_scores(state["scores"].to(device))
            space.set_mask(state["mask"].to(device))
            with torch.no_grad():
                for name, buffer in space.model.named_buffers():
                    buffer.copy_(state["buffers"][name])
            searcher.load_state_dict(state["searcher"])
            loop = Loop(total=total, steps_per_epoch=steps_per_epoch, device=device, position=searcher.t,
                        tally=state["tally"], seconds=state["epoch_seconds"])
            history = [EpochRecord(**h) for h in state["history"]]
            initial = tuple(state["initial"])
            torch.set_rng_state(state["rng"])
        else:
            if settings["bn_reestimation"]:
                reestimate_batchnorm(space.model, train, batch_size, device)
            initial = (evaluate(space.model, test, device=device, logits=logits) if test is not None
                       else (math.nan, math.nan))

        def save() -> None:
            if checkpoint is None or rank != 0:
                return
            checkpoints.save(checkpoint, CHECKPOINT_KIND, run, dict(
                scores=space.scores.detach().cpu(), mask=space.mask.cpu(),
                buffers={n: b.cpu() for n, b in space.model.named_buffers()}, searcher=searcher.state_dict(),
                tally=loop.tally.cpu(), epoch_seconds=loop.seconds, history=[asdict(h) for h in history],
                initial=list(initial), rng=torch.get_rng_state()))

        orders: dict[int, torch.Tensor] = {}

        def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
            epoch, index = divmod(t, steps_per_epoch)
            if epoch not in orders:
                orders.clear()
                sampler.set_epoch(epoch)
                orders[epoch] = torch.tensor(list(sampler), dtype=torch.int64).to(device)
            idx = orders[epoch][index * local_batch:(index + 1) * local_batch]
            x, y = x_train[idx], y_train[idx]
            if augment is not None:
                x = augment(x, derived_generator(seed, 2, t, rank))
            return x, y

        def end_epoch(epoch: int, tally: torch.Tensor, seconds: float) -> None:
            history.append(_epoch_record(space, searcher, test, device, epoch, tally, history, seconds))
            bar.set_postfix(loss=f"{history[-1].train_loss:.3f}", test_acc=f"{history[-1].test_acc:.2%}")

        stop = total if config.max_steps is None else min(total, config.max_steps)
        bar = tqdm(total=total, initial=searcher.t, disable=None if progress and rank == 0 else True, unit="step",
                   desc=f"jackpot {data_name} {sparsity:.0%}", dynamic_ncols=True)
        space.model.train()
        try:
            loop.run(stop=stop, batch=batch, step=searcher.step, end_epoch=end_epoch, save=save,
                     save_every=config.checkpoint_every or steps_per_epoch, bar=bar)
        finally:
            bar.close()
            space.release()
        return SearchResult(masks=space.masks(), model=space.model, scores=space.score_dict(),
                            budgets=dict(zip(space.names, k.tolist())), settings=settings,
                            initial_test_loss=initial[0], initial_test_acc=initial[1], history=history,
                            steps=searcher.t, completed=searcher.t == total)
    except BaseException:
        space.undo()
        raise


def _epoch_record(space, searcher, test, device, epoch, tally, history, seconds) -> EpochRecord:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tally)
    loss_sum, correct, n = tally.tolist()
    test_loss, test_acc = (evaluate(space.model, test, device=device, logits=searcher.logits) if test is not None
                           else (math.nan, math.nan))
    counters = searcher.counters.tolist()
    before = [sum(getattr(h, c) for h in history) for c in COUNTERS]
    this_epoch = {c: total - prev for c, total, prev in zip(COUNTERS, counters, before)}
    return EpochRecord(epoch=epoch + 1, lr=searcher.optimizer.param_groups[0]["lr"], train_loss=loss_sum / n,
                       train_acc=correct / n, test_loss=test_loss, test_acc=test_acc, seconds=seconds,
                       **this_epoch)
