"""Train (or fine-tune) a model on a :class:`~panning.data.DataBundle`, a Dataset or a DataLoader, optionally under
fixed pruning masks.

- SGD with momentum (optionally Nesterov) or Adam, weight decay, a per-step cosine (or constant) learning rate.
- Masks stay exact. The masked Linear / Conv1d / Conv2d layers train as sparse layers (panning.nn, swapped in
  for the run and back at its end), each on the path ``mode`` gives it: masked (the op masks the gradient) or
  compressed (only the kept weights are trained; their gradient, momentum and Adam moments are sized by the
  kept count). Any other masked parameter is zeroed before training, its gradient zeroed before every optimizer
  step (so momentum / Adam moments stay zero there) and the mask re-applied after every step.
- Deterministic for a seed: each epoch's data order and augmentation come from a generator seeded by
  (seed, epoch), and the global torch generator is seeded once at the start.
- Checkpoints: at the end of every epoch the full state (model, optimizer, scheduler, RNG, history, masks) is
  written atomically; a resumed run ends with the same weights, bit for bit, as an uninterrupted one (on CPU;
  on GPU as far as the kernels are deterministic). Checkpoints load with ``weights_only=True``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from panning import checkpoint as checkpoints, checks
from panning.adapter import Logits, logits as logits_of
from panning.config import BATCH_SIZE, EPOCHS, LR, MOMENTUM, SEED, WEIGHT_DECAY, Config, ConfigError, one_of, setting
from panning.criteria import arguments
from panning.data import Data, DataBundle, Split, as_tensors, split
from panning.io import derived_generator
from panning.masks import Masks
from panning.models.io import state_differences
from panning.nn import MODES, densify, layer_masks, sparsify

#: Default recipes per model name: fields of a :class:`Recipe` (keyword arguments of :func:`train`). The MNIST-1D
#: ones start from the data set's authors (Adam, lr 1e-2) with a smaller batch, L2 5e-4 and a cosine schedule
#: (CNN ~94%, MLP ~69% test accuracy, under a minute each on 2 CPU cores); the CIFAR ones follow the
#: pruning-at-init papers (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 128, 160 epochs), with cosine instead
#: of step decay.
RECIPES: dict[str, dict] = {
    "mlp": dict(epochs=60, batch_size=50, lr=1e-2, optimizer="adam", weight_decay=5e-4),
    "cnn1d": dict(epochs=60, batch_size=50, lr=1e-2, optimizer="adam", weight_decay=5e-4),
    "cnn2d": dict(epochs=30, batch_size=64, lr=0.05, optimizer="sgd", weight_decay=5e-4),
    "vgg19_bn": dict(epochs=160, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4),
    "resnet32": dict(epochs=160, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4),
}

#: The pruning-before-training protocol (docs/data.md): data set -> model, width and training recipe. Widths give
#: ~65K prunable weights, wide enough for the sparsity grid to separate the methods; the recipes are at the dense
#: plateau (cnn1d: 15 vs 30 epochs 91.5 vs 91.8% at seed 0; cnn2d: 99.4% after 6 epochs), shortened from RECIPES
#: to fit one core. experiments/pbt_results.py runs it; `panning demo` shows its MNIST-1D half.
PROTOCOL: dict[str, dict] = {
    "mnist1d": dict(model="cnn1d", width=4.0,
                    recipe=dict(epochs=15, batch_size=100, lr=1e-2, optimizer="adam", weight_decay=5e-4)),
    "digits": dict(model="cnn2d", width=1.0,
                   recipe=dict(epochs=8, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4)),
}

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
CHECKPOINT_KIND = "training"


@dataclass(frozen=True)
class Recipe(Config):
    """How :func:`train` trains, every setting checked once when the recipe is built (panning.config).

    ``optimizer`` is "sgd" (uses ``momentum``, ``nesterov``) or "adam"; ``weight_decay`` is L2 added to the
    gradient in both. ``schedule`` "cosine" decays the learning rate per step from ``lr`` to 0. ``mode`` is the
    path of the masked layers ("auto": chosen per layer by panning.nn's cost model; "masked"; "compressed").
    ``seed`` seeds the run's data order and augmentation (per epoch) and, once at the start, torch's generator.
    """

    epochs: int = EPOCHS.field()
    batch_size: int = BATCH_SIZE.field(128)
    lr: float = LR.field(0.1)
    momentum: float = MOMENTUM.field(0.9)
    weight_decay: float = WEIGHT_DECAY.field(5e-4)
    nesterov: bool = False
    optimizer: str = setting("sgd", check=one_of(OPTIMIZERS))
    schedule: str = setting("cosine", check=one_of(SCHEDULES))
    mode: str = setting("auto", check=one_of(MODES))
    seed: int = SEED.field(0)


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did. Losses are per-sample means; accuracies are fractions in [0, 1]."""

    epoch: int  # 1-based
    lr: float  # learning rate at the end of the epoch (that of the next step)
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """The per-epoch history of a run (including epochs restored from a checkpoint) and its final metrics."""

    history: list[EpochStats] = field(default_factory=list)
    wall_time: float = 0.0  # seconds spent in this call (a resumed run does not count the earlier part)
    paths: dict[str, str] = field(default_factory=dict)  # masked layer -> its SparseLayer.path_detail

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def test_loss(self) -> float:
        return self.history[-1].test_loss if self.history else math.nan

    @property
    def test_acc(self) -> float:
        return self.history[-1].test_acc if self.history else math.nan


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Data, batch_size: int = 1000, device="cpu",
             logits: Logits = logits_of) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction) of ``model`` on ``dataset`` (a DataBundle's test split, a
    Dataset of (input, label) items or a DataLoader of batches, read once: panning.data.as_tensors), in eval mode;
    ``logits`` picks the class scores out of the model's output (default: panning.adapter.logits).

    The model's train/eval mode is restored afterwards. ``model`` must already be on ``device``.
    """
    x_all, y_all = (dataset.test if isinstance(dataset, DataBundle) else as_tensors(dataset, "dataset")).tensors
    checks.positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for start in range(0, len(y_all), batch_size):
            x = x_all[start : start + batch_size].to(device, non_blocking=True)
            y = y_all[start : start + batch_size].to(device, non_blocking=True)
            scores = logits(model(x))
            loss += nn.functional.cross_entropy(scores, y, reduction="sum").double()
            correct += (scores.argmax(1) == y).sum()
    finally:
        model.train(was_training)
    n = max(len(y_all), 1)
    return loss.item() / n, correct.item() / n


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, dataset: Dataset | DataLoader, batch_size: int = 256,
                         device="cpu") -> int:
    """Re-estimate the running statistics of every BatchNorm layer of ``model`` for its current weights (and
    masks): reset them, run one pass over ``dataset`` in order in train mode, averaging over all batches (not
    an exponential average), and restore each layer's momentum and the model's mode. No parameter changes.
    Returns the number of BatchNorm layers (0: nothing to do, no pass run)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    x_all, _ = as_tensors(dataset, "dataset").tensors
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the mean over the batches of the pass
    model.train()
    try:
        for start in range(0, len(x_all), batch_size):
            model(x_all[start : start + batch_size].to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


def loop_data(model: nn.Module, data: Data, test: Data | None, logits: Logits) -> Split:
    """The data a training loop over `model` runs on (panning.data.split of `data` and `test`), once the `logits`
    function and the samples are checked against the model: the checks `train` and the jackpot search share,
    before any work. A model on the meta device is refused by the search's Arena, and by torch where `train`
    moves it to its device."""
    checks.instance("logits", logits, Callable, "a function of the model's output")
    split_data = split(data, test)  # reads a DataLoader: after the cheap checks
    x, y = split_data[0].tensors
    arguments.takes_samples(model, tuple(x.shape[1:]), classes=int(y.max()) + 1)
    return split_data


def cosine(total_steps: int, steps_per_epoch: int | None = None) -> Callable[[int], float]:
    """The factor of the base learning rate at step t: 0.5 (1 + cos(pi t / T)) over ``total_steps`` T, per step;
    or, with ``steps_per_epoch``, constant within an epoch: 0.5 (1 + cos(pi e / E)) for epoch e of E (a
    per-epoch cosine annealing, as torch's CosineAnnealingLR stepped once per epoch, in closed form)."""
    if steps_per_epoch is None:
        return lambda t: 0.5 * (1.0 + math.cos(math.pi * t / total_steps))
    epochs = math.ceil(total_steps / steps_per_epoch)
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * (t // steps_per_epoch) / epochs))


class Diverged(ArithmeticError):
    """The training loss became NaN or infinite: the run stops before anything of it is saved."""


class Loop:
    """The step/epoch driver shared by :func:`train` and the jackpot search.

    It runs steps ``position .. stop - 1`` of a run of ``total`` steps, ``steps_per_epoch`` to an epoch (the last
    epoch may be short): ``batch(t)`` gives the batch of step t, ``step(x, y)`` trains on it and returns the
    (detached) mean loss and logits. It keeps the epoch's running loss sum, correct count and sample count in
    ``tally`` (a float64 tensor on the device: no host sync per step) and the epoch's seconds, calls
    ``end_epoch(epoch, tally, seconds)`` (0-based epoch) when an epoch ends (also when the run's last step
    ends it early), and ``save()`` every ``save_every`` steps and after the last step run. ``tally`` and
    ``seconds`` belong in a checkpoint taken mid-epoch. A loss that is no longer finite when an epoch ends or a
    save is due raises :class:`Diverged` before either, so a diverged run never overwrites a good checkpoint.
    """

    def __init__(self, *, total: int, steps_per_epoch: int, device, position: int = 0,
                 tally: torch.Tensor | None = None, seconds: float = 0.0):
        self.total, self.steps_per_epoch, self.position = total, steps_per_epoch, position
        self.tally = torch.zeros(3, dtype=torch.float64, device=device) if tally is None else tally.to(device)
        self.seconds = seconds

    def run(self, *, stop: int, batch, step, end_epoch, save=None, save_every: int | None = None,
            bar=None) -> None:
        while self.position < stop:
            started = time.perf_counter()
            x, y = batch(self.position)
            loss, logits = step(x, y)
            self.tally += torch.stack([loss.double() * len(y), (logits.argmax(1) == y).sum().double(),
                                       torch.tensor(float(len(y)), dtype=torch.float64, device=self.tally.device)])
            self.position += 1
            self.seconds += time.perf_counter() - started
            if bar is not None:
                bar.update()
            ends = self.position % self.steps_per_epoch == 0 or self.position == self.total
            saves = save is not None and (self.position == stop or (save_every and self.position % save_every == 0))
            if (ends or saves) and not bool(torch.isfinite(self.tally[0])):
                epoch = (self.position - 1) // self.steps_per_epoch + 1
                raise Diverged(f"the training loss became {self.tally[0].item():g} in epoch {epoch} (step "
                               f"{self.position}): the run diverged and stopped before saving anything of it; a "
                               "lower learning rate may help")
            if ends:
                end_epoch((self.position - 1) // self.steps_per_epoch, self.tally.clone(), self.seconds)
                self.tally.zero_()
                self.seconds = 0.0
            if saves:
                save()


@torch.no_grad()
def _zero_masked_weights(pruned: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for p, off in pruned:
        p.masked_fill_(off, 0.0)


def _zero_masked_grads(pruned: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for p, off in pruned:
        if p.grad is not None:
            p.grad.masked_fill_(off, 0.0)


def _make_optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    model: nn.Module,
    data: Data,
    recipe: Recipe | None = None,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    test: Dataset | DataLoader | None = None,
    device="cpu",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    logits: Logits = logits_of,
    **settings,
) -> TrainResult:
    """Train ``model`` in place on ``data`` as ``recipe`` says (a :class:`Recipe`; or its fields as keywords,
    ``train(model, data, epochs=10, lr=0.05)``, which also override a given recipe's). ``data``: a DataBundle
    (trained on ``.train``, evaluated on ``.test`` after each epoch), or a Dataset of (input, label) items or a
    DataLoader of (inputs, labels) batches, read once into memory (panning.data.split). ``test`` (the same kinds;
    given, it replaces a bundle's test split) is evaluated after each epoch; without any, the history's test loss
    and accuracy are NaN.

    ``masks`` maps parameter names (as in ``model.named_parameters()``) to bool tensors of the parameter's shape;
    False positions are held at exactly zero. The masked layers train on the recipe's ``mode``, reported in
    ``TrainResult.paths``; the model comes back with its own layer types. ``checkpoint`` is a file path written at
    the end of every epoch; with ``resume`` and an existing file the run continues from it (its settings, data and
    masks must match). ``logits`` picks the class scores out of the model's output (default:
    panning.adapter.logits).
    """
    recipe = Recipe(**settings) if recipe is None else dataclasses.replace(recipe, **settings)
    train_set, test, augment, name = loop_data(model, data, test, logits)
    started = time.perf_counter()
    device = torch.device(device)
    model.to(device)
    masks = Masks(masks if masks is not None else {})
    parameters = masks.check(model)  # the one check of the masks, before anything changes
    held, others = layer_masks(model, masks)
    pruned = [(parameters[name], ~mask.to(device)) for name, mask in others.items()]
    before = set(model.modules())
    sparsify(model, held, mode=recipe.mode)
    layers = {name.rpartition(".")[0]: model.get_submodule(name.rpartition(".")[0]) for name in held}
    try:
        return _train(model, train_set, test, augment, name, recipe, masks=masks, device=device,
                      checkpoint=checkpoint, resume=resume, progress=progress, logits=logits, pruned=pruned,
                      paths={name: layer.path_detail for name, layer in layers.items()}, started=started)
    finally:  # the layers this run swapped in go back to the model's own types
        densify(model, [layer for layer in layers.values() if layer not in before])


def _train(model, train_set, test, augment, name, recipe: Recipe, *, masks, device, checkpoint, resume, progress,
           logits, pruned, paths, started) -> TrainResult:
    x_train, y_train = (t.to(device) for t in train_set.tensors)
    n = len(y_train)
    batch_size, seed = recipe.batch_size, recipe.seed
    steps_per_epoch = math.ceil(n / batch_size)
    total = recipe.epochs * steps_per_epoch
    opt = _make_optimizer(model, recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(total) if recipe.schedule == "cosine" else lambda step: 1.0)
    torch.manual_seed(seed)

    # Everything that must agree for a checkpoint to continue this run rather than some other one.
    config = dict(
        epochs=recipe.epochs, batch_size=batch_size, lr=recipe.lr, momentum=recipe.momentum,
        weight_decay=recipe.weight_decay, nesterov=recipe.nesterov, optimizer=recipe.optimizer,
        schedule=recipe.schedule, seed=seed, data=name, train_size=n,
    )
    mask_state = {p_name: m.detach().cpu() for p_name, m in masks.items()}
    history: list[EpochStats] = []
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        history = _restore(checkpoint, model, opt, sched, config, mask_state, paths)
    _zero_masked_weights(pruned)

    epoch_data: dict[int, tuple[torch.Tensor, torch.Generator]] = {}

    def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(t, steps_per_epoch)
        if epoch not in epoch_data:  # the epoch's order and augmentation come from one generator
            epoch_data.clear()
            generator = derived_generator(seed, epoch)
            epoch_data[epoch] = (torch.randperm(n, generator=generator).to(device), generator)
        order, generator = epoch_data[epoch]
        idx = order[index * batch_size : (index + 1) * batch_size]
        x, y = x_train[idx], y_train[idx]
        return (augment(x, generator) if augment is not None else x), y

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = logits(model(x))
        loss = nn.functional.cross_entropy(scores, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _zero_masked_grads(pruned)
        opt.step()
        sched.step()
        _zero_masked_weights(pruned)
        return loss.detach(), scores.detach()

    def end_epoch(epoch: int, tally: torch.Tensor, seconds: float) -> None:
        test_loss, test_acc = (evaluate(model, test, device=device, logits=logits) if test is not None
                               else (math.nan, math.nan))
        loss_sum, correct, count = tally.tolist()
        history.append(EpochStats(
            epoch=epoch + 1, lr=opt.param_groups[0]["lr"], train_loss=loss_sum / count, train_acc=correct / count,
            test_loss=test_loss, test_acc=test_acc, seconds=seconds,
        ))
        bar.set_postfix(loss=f"{history[-1].train_loss:.3f}", test_acc=f"{test_acc:.2%}")

    def save() -> None:
        checkpoints.save(checkpoint, CHECKPOINT_KIND, config, dict(
            model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(), rng=_rng_state(),
            masks=mask_state, paths=paths, history=[asdict(h) for h in history]))

    loop = Loop(total=total, steps_per_epoch=steps_per_epoch, device=device, position=len(history) * steps_per_epoch)
    bar = tqdm(
        total=total, initial=loop.position, disable=None if progress else True, desc=f"train {name}", unit="step",
        dynamic_ncols=True,
    )
    model.train()  # evaluate() puts the mode back after every epoch
    try:
        loop.run(stop=total, batch=batch, step=step, end_epoch=end_epoch, save=save if checkpoint is not None else None,
                 save_every=steps_per_epoch, bar=bar)
    finally:
        bar.close()
    return TrainResult(history=history, wall_time=time.perf_counter() - started, paths=paths)


def _restore(path, model, opt, sched, config: dict, mask_state: dict, paths: dict) -> list[EpochStats]:
    """Load a checkpoint written by :func:`train` into model/optimizer/scheduler/RNG; return its history."""
    state = checkpoints.load(path, CHECKPOINT_KIND, config)
    saved, tensors = state["masks"], state_differences(model.state_dict(), state["model"])
    # The first difference is the cause: other masks also give other paths and other mask buffers.
    if saved.keys() != mask_state.keys() or any(not torch.equal(saved[k], mask_state[k]) for k in saved):
        difference = "other masks"
    elif state.get("paths", {}) != paths:  # the optimizer trains other parameters on each path
        difference = f"its layers on other paths: {state.get('paths')} there, {paths} here"
    else:
        difference = f"another model: {tensors}" if tensors else None
    if difference is not None:
        raise ConfigError("checkpoint", f"{os.fspath(path)!r} belongs to another run ({difference}); continue "
                                        f"with its masks, mode and model, or {checkpoints.AFRESH}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return [EpochStats(**h) for h in state["history"]]
