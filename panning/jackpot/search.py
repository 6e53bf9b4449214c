"""Lottery-jackpot search: learn per-weight scores over frozen pre-trained weights; the mask is their top-k.

`search(model, data, sparsity=0.9)` wraps `model` in a `JackpotNet` (in place), sets per-layer budgets from
one global magnitude threshold, starts the scores at the magnitude mask, and runs SGD on the scores
(momentum 0.9, lr 0.1, weight decay 5e-4, cosine, batch 256). After every optimizer step the mask is one
segmented `panning.ops.topk_mask` over the whole arena (offsets and budgets live on the host: no Python loop
over layers, no device synchronization), optionally filtered by the short restriction.

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
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DistributedSampler, TensorDataset
from tqdm.auto import tqdm

from .. import ops
from ..arena import except_last, prunable
from ..data import DataBundle
from ..masks import Masks
from ..io import derived_generator, save_atomically, save_tensors
from ..train import evaluate
from .budget import BUDGETS, INITS, initial_scores, layer_budgets
from .layers import JackpotNet
from .restriction import rate, short_restriction

RESTRICTIONS = ("short", "none")
CHECKPOINT_FORMAT = 1
COUNTERS = ("proposed", "admitted", "updates", "rises")


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


@dataclass
class SearchResult:
    """What `search` found. `model` is the JackpotNet wearing `masks` (weights untouched)."""

    masks: Masks
    model: JackpotNet
    budgets: dict[str, int]
    initial_test_loss: float  # the start mask (the magnitude mask for init="magnitude"/"abs") on the test set
    initial_test_acc: float
    history: list[EpochRecord] = field(default_factory=list)
    steps: int = 0
    completed: bool = True  # False when stopped early by max_steps

    def counters(self) -> dict[str, int]:
        return {name: sum(getattr(r, name) for r in self.history) for name in COUNTERS}

    def scores(self) -> dict[str, torch.Tensor]:
        """The learned scores per searched parameter (views into the net's flat score buffer)."""
        return self.model.arena.split(self.model.scores.detach())

    def save(self, directory: str | os.PathLike) -> None:
        """Write masks.safetensors and scores.safetensors into `directory` (atomically each)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.masks.save(directory / "masks.safetensors")
        save_tensors({name: s.contiguous().cpu() for name, s in self.scores().items()},
                     directory / "scores.safetensors")


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
    """The per-step machinery of a search over `net`: optimizer and cosine schedule on the scores, the
    segmented top-k refresh, the optional short restriction, and device-side counters.

    k: (S,) host int64 budgets; total_steps: T of the schedule and of r_t. `forward` is the module the step
    runs (the net, or a DistributedDataParallel around it).
    """

    def __init__(self, net: JackpotNet, k: torch.Tensor, *, total_steps: int, restriction: str = "short",
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4, monitor: bool = False,
                 forward: nn.Module | None = None):
        if restriction not in RESTRICTIONS:
            raise ValueError(f"restriction: expected one of {', '.join(RESTRICTIONS)}, got {restriction!r}")
        if not lr > 0:
            raise ValueError(f"lr: expected > 0, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: expected in [0, 1), got {momentum!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay!r}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps: expected a positive int, got {total_steps!r}")
        self.net = net
        self.forward = forward if forward is not None else net
        self.k = k.to("cpu", torch.int64)
        self.offsets = net.arena.offsets
        self.total_steps = total_steps
        self.restriction = restriction
        self.monitor = monitor
        self.t = 0
        # Nesterov off: the SGD step then leaves .grad as it is, which the restriction reads afterwards.
        self.optimizer = torch.optim.SGD([net.scores], lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / total_steps)))
        self.counters = torch.zeros(len(COUNTERS), dtype=torch.int64, device=net.scores.device)
        self._batchnorms = [m for m in net.modules() if isinstance(m, _BatchNorm)]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One search step on a batch: (detached mean loss, logits) of the forward under the old mask."""
        if self.t >= self.total_steps:
            raise RuntimeError(f"step: the schedule of {self.total_steps} steps is over")
        net = self.net
        logits = self.forward(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        score_grad = net.scores.grad  # dL/dW_eff * W, all-reduced under DDP
        self.optimizer.step()
        self.schedule.step()
        with torch.no_grad():
            proposed = ops.topk_mask(net.scores, self.k, offsets=self.offsets)
            old = net.mask != 0
            if self.restriction == "short":
                new, pairs, admitted = short_restriction(old, proposed, net.scores, score_grad, self.offsets,
                                                         rate(self.t, self.total_steps))
            else:
                new = proposed
                pairs = admitted = (proposed & ~old).sum()
            net.mask.copy_(new)
            changed = admitted > 0
            self.counters[0] += pairs
            self.counters[1] += admitted
            self.counters[2] += changed
            if self.monitor:
                with _batchnorm_statistics_frozen(self._batchnorms):
                    after = F.cross_entropy(net(x), y)
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
# the search loop




def _datasets(data, test) -> tuple[TensorDataset, TensorDataset | None, object, str]:
    if isinstance(data, DataBundle):
        return data.train, test if test is not None else data.test, data.augment, data.name
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data, test, None, "tensors"
    raise TypeError(f"data: expected a DataBundle or a TensorDataset of (inputs, labels), got {type(data).__name__}")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def search(model: nn.Module, data, *, sparsity: float, epochs: int = 10, init: str = "magnitude",
           restriction: str = "short", budget: str = "global", include_classifier: bool = False,
           batch_size: int = 256, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
           monitor: bool = False, test: TensorDataset | None = None, seed: int = 0, checkpoint=None,
           resume: bool = True, checkpoint_every: int | None = None, max_steps: int | None = None,
           progress: bool = True) -> SearchResult:
    """Search a lottery jackpot of `sparsity` in the pre-trained `model` (wrapped in place, weights untouched).

    data: a DataBundle (searched on .train, evaluated on .test after every epoch) or a TensorDataset (then
    `test` optional). init: "magnitude" | "abs" | "random" starting scores; restriction: "short" | "none";
    budget: "global" (one magnitude threshold) | "uniform"; include_classifier: search the last layer too.
    The model runs where its parameters are. checkpoint: file written every `checkpoint_every` steps
    (default: every epoch) and at the end; with `resume` an existing one is continued. max_steps: stop
    (checkpointed) after this many steps in total; a later call with the same checkpoint goes on.
    Returns a SearchResult; `result.model` is the JackpotNet wearing `result.masks`.
    """
    train, test, augment, data_name = _datasets(data, test)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if init not in INITS:
        raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")
    if restriction not in RESTRICTIONS:
        raise ValueError(f"restriction: expected one of {', '.join(RESTRICTIONS)}, got {restriction!r}")
    if budget not in BUDGETS:
        raise ValueError(f"budget: expected one of {', '.join(BUDGETS)}, got {budget!r}")
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    if checkpoint_every is not None:
        _check_int("checkpoint_every", checkpoint_every, 1)
    if max_steps is not None:
        _check_int("max_steps", max_steps, 0)
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
    if batch_size % world:
        raise ValueError(f"batch_size: {batch_size} does not split evenly over {world} processes")
    params = list(model.parameters())
    if not params:
        raise ValueError("model: has no parameters")
    device = params[0].device

    net = JackpotNet(model, include=prunable if include_classifier else except_last(model))
    try:  # until the search starts, a failure leaves the model as it was given
        k = layer_budgets(net.arena, sparsity, budget=budget)
        net.set_scores(initial_scores(net.arena, k, init, generator=derived_generator(seed, 1)))
        net.set_mask(ops.topk_mask(net.scores.detach(), k, offsets=net.arena.offsets))
        sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        local_batch = batch_size // world
        steps_per_epoch = math.ceil(len(sampler) / local_batch)
        total = epochs * steps_per_epoch
        forward = net
        if world > 1:
            forward = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        searcher = Searcher(net, k, total_steps=total, restriction=restriction, lr=lr, momentum=momentum,
                            weight_decay=weight_decay, monitor=monitor, forward=forward)
        config = dict(sparsity=float(sparsity), epochs=epochs, init=init, restriction=restriction, budget=budget,
                      include_classifier=include_classifier, batch_size=batch_size, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, monitor=monitor, seed=seed, world=world, data=data_name,
                      train_size=len(train), names=list(net.names), k=k.tolist())
        fingerprint = net.arena.weights.detach().double().abs().sum().item()
        x_train, y_train = (t.to(device) for t in train.tensors)
        history: list[EpochRecord] = []
        accum = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, samples this epoch
        epoch_seconds = 0.0
        path = Path(os.fspath(checkpoint)) if checkpoint is not None else None
        if path is not None and resume and path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            _check_checkpoint(state, path, config, fingerprint)
            net.set_scores(state["scores"].to(device))
            net.set_mask(state["mask"].to(device))
            with torch.no_grad():
                for name, buffer in net.model.named_buffers():
                    buffer.copy_(state["buffers"][name])
            searcher.load_state_dict(state["searcher"])
            accum.copy_(state["accum"])
            epoch_seconds = state["epoch_seconds"]
            history = [EpochRecord(**h) for h in state["history"]]
            initial = tuple(state["initial"])
            torch.set_rng_state(state["rng"])
        else:
            initial = evaluate(net, test, device=device) if test is not None else (math.nan, math.nan)
    except BaseException:
        net.unwrap()
        raise

    def save() -> None:
        if path is None or rank != 0:
            return
        save_atomically(dict(
            format=CHECKPOINT_FORMAT, config=config, fingerprint=fingerprint, scores=net.scores.detach().cpu(),
            mask=(net.mask != 0).cpu(), buffers={n: b.cpu() for n, b in net.model.named_buffers()},
            searcher=searcher.state_dict(), accum=accum.cpu(), epoch_seconds=epoch_seconds,
            history=[asdict(h) for h in history], initial=list(initial), rng=torch.get_rng_state()), path)

    stop = total if max_steps is None else min(total, max_steps)
    every = checkpoint_every or steps_per_epoch
    bar = tqdm(total=total, initial=searcher.t, disable=not progress or rank != 0, unit="step",
               desc=f"jackpot {data_name} {sparsity:.0%}", dynamic_ncols=True)
    net.train()
    order_epoch, order = -1, None
    try:
        while searcher.t < stop:
            epoch, batch = divmod(searcher.t, steps_per_epoch)
            started = time.perf_counter()
            if epoch != order_epoch:
                sampler.set_epoch(epoch)
                order_epoch, order = epoch, torch.tensor(list(sampler), dtype=torch.int64).to(device)
            idx = order[batch * local_batch:(batch + 1) * local_batch]
            x, y = x_train[idx], y_train[idx]
            if augment is not None:
                x = augment(x, derived_generator(seed, 2, searcher.t, rank))
            loss, logits = searcher.step(x, y)
            accum[0] += loss.double() * len(y)
            accum[1] += (logits.argmax(1) == y).sum()
            accum[2] += len(y)
            epoch_seconds += time.perf_counter() - started
            bar.update()
            if searcher.t % steps_per_epoch == 0:
                history.append(_close_epoch(net, searcher, test, device, epoch, accum, history, epoch_seconds))
                bar.set_postfix(loss=f"{history[-1].train_loss:.3f}", test_acc=f"{history[-1].test_acc:.2%}")
                accum.zero_()
                epoch_seconds = 0.0
            if searcher.t % every == 0 or searcher.t == stop:
                save()
    finally:
        bar.close()
    return SearchResult(masks=net.masks(), model=net, budgets=dict(zip(net.names, k.tolist())),
                        initial_test_loss=initial[0], initial_test_acc=initial[1], history=history,
                        steps=searcher.t, completed=searcher.t == total)


def _close_epoch(net, searcher, test, device, epoch, accum, history, seconds) -> EpochRecord:
    totals = accum.clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(totals)
    loss_sum, correct, n = totals.tolist()
    test_loss, test_acc = evaluate(net, test, device=device) if test is not None else (math.nan, math.nan)
    counters = searcher.counters.tolist()
    before = [sum(getattr(h, c) for h in history) for c in COUNTERS]
    this_epoch = {c: total - prev for c, total, prev in zip(COUNTERS, counters, before)}
    return EpochRecord(epoch=epoch + 1, lr=searcher.optimizer.param_groups[0]["lr"], train_loss=loss_sum / n,
                       train_acc=correct / n, test_loss=test_loss, test_acc=test_acc, seconds=seconds, **this_epoch)


def _check_checkpoint(state, path: Path, config: dict, fingerprint: float) -> None:
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a jackpot search checkpoint (format {CHECKPOINT_FORMAT})")
    differ = sorted(key for key in config if state["config"].get(key) != config[key])
    if differ:
        raise ValueError(f"checkpoint: {str(path)!r} belongs to another search (differs in {differ})")
    if state["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint: {str(path)!r} was written for other pre-trained weights")
