"""The option table of the ``panning`` commands: each option carries its type, help, default and check once.

An :class:`Option` builds its argparse flag (``--flag``, help ending in its default) and the key a ``--config``
YAML file may set (``flag`` or ``flag_with_underscores``). :func:`resolve` is the one step from parsed flags to the
options a command runs with: the command's defaults, overridden by the config file, overridden by the flags, then
every option's check. A failed check raises :class:`UsageError` naming the option; ``panning.cli.main`` turns it
into one line ``panning <command>: error: ...`` and exit status 2, before any work starts.

The options several commands share (``--data``, ``--model``, ``--threads``, ``--device`` ...) are defined here once;
a command adjusts one with :meth:`Option.but` (e.g. another default). Nothing here imports torch: ``panning --help``
builds every command's parser from these tables alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog, config


class UsageError(ValueError):
    """Bad options or input files, found before any work started."""


#: The type of on/off options: ``--x`` / ``--no-x`` on the command line, true / false in YAML (see _convert).
boolean = bool


@dataclass(frozen=True)
class Option:
    """One command option: ``--flag`` on the command line, ``flag`` (or ``flag_with_underscores``) in YAML.

    ``default`` is the value when neither the flag nor the config sets it (None: the command decides, as the help
    says); ``check(name, value)`` validates a set value, given the option's name ``--flag`` for its message;
    ``requires`` names the option without which this one has no effect (setting it alone is refused)."""

    flag: str
    type: Callable[[Any], Any]
    help: str
    default: Any = None
    choices: Sequence[str] | None = None
    check: Callable[[str, Any], Any] | None = None
    requires: str | None = None  # the option (dest) without which this one has no effect

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    @property
    def name(self) -> str:
        return f"--{self.flag}"

    def but(self, **changes) -> Option:
        """This option with some fields changed (another default, help or check for one command)."""
        return dataclasses.replace(self, **changes)

    def help_text(self) -> str:
        if self.default is None:
            return self.help
        shown = ("on" if self.default else "off") if self.type is boolean else self.default
        return f"{self.help} (default: {shown})"


# -- checks of option values: check(name, value) -> value (the scalar ones are panning.checks) -------------------


def importing(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """Mark a check that imports heavy modules (torch, an algorithm's package): :func:`resolve` runs it after every
    cheap check, so that a plain typo is reported at once."""
    check.imports = True
    return check


def output_file(name: str, path: Path) -> Path:
    """A file that can be written: not a folder, in a folder that exists and is writable."""
    if path.is_dir() or not (path.parent.is_dir() and os.access(path.parent, os.W_OK)):
        raise UsageError(f"{name}: cannot write {str(path)!r}: give a file name in an existing folder you can "
                         "write to")
    return path


def output_folder(name: str, path: Path) -> Path:
    """A folder that exists, or can be created under the nearest existing folder above it, and is writable."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not (existing.is_dir() and os.access(existing, os.W_OK)):
        raise UsageError(f"{name}: cannot write into {str(path)!r}: {str(existing)!r} is not a folder you can "
                         "write to")
    return path


def room_for(name: str, path: Path, size: int) -> None:
    """Refuse, before any work, an output `path` whose disk has less free space than the `size` bytes of tensors
    the command will write there, with room for the file's header and the file system's blocks (a full disk
    found after the work would lose it; one that fills up meanwhile is still reported by panning.io)."""
    import shutil

    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    size += _HEADROOM
    if free < size:
        raise UsageError(f"{name}: the disk of {str(folder)!r} has {free:,} bytes free; {str(path)!r} needs about "
                         f"{size:,}")


#: Bytes a file needs beyond its tensors: the header (names, shapes, metadata) and the last file-system block.
_HEADROOM = 16 * 1024


def distinct_files(opts: dict, *keys: str) -> None:
    """Refuse two options of `keys` that name the same file (one would overwrite the other)."""
    seen: dict[Path, str] = {}
    for key in keys:
        if opts.get(key) is not None:
            path = Path(os.path.realpath(opts[key]))
            if path in seen:
                raise UsageError(f"--{key.replace('_', '-')}: the same file as --{seen[path].replace('_', '-')} "
                                 f"({str(opts[key])!r}); writing one would destroy the other")
            seen[path] = key


def agent_fits(name: str, path: Path, **network) -> None:
    """Refuse, before any work, the saved agent given as option `name` by its path without suffix (panning agent
    --out) unless both its files, the .json and the .safetensors, are readable (panning.pbt.rl.agent
    .check_agent_files names a missing or damaged one) and it was trained for `network` (model=, width=, data=)."""
    from ..pbt.rl.agent import agent_differences, check_agent_files

    try:
        check_agent_files(path)
    except ValueError as error:
        raise UsageError(f"{name}: {str(error).removeprefix('agent ')}") from None
    differs = agent_differences(path, **network)
    if differs:
        raise UsageError(f"{name}: {str(path)!r} was trained for another network: {'; '.join(differs)}")


@importing
def device(name: str, value: str) -> str:
    """A torch device that exists on this machine (cpu, cuda, cuda:<i>, mps)."""
    import torch  # only once a command runs: --help stays free of torch

    try:
        parsed = torch.device(value)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{name}: {value!r} is not a device panning runs on (cpu, cuda, cuda:<i>, mps)")
    kind = parsed.type
    count = {"cpu": None, "cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
             "mps": int(torch.backends.mps.is_available())}[kind]
    if count is not None and (parsed.index or 0) >= count:
        raise UsageError(f"{name}: {value!r} asked for, but this machine has {count or 'no'} {kind.upper()} "
                         "device(s)")
    return value


#: The forms of --model beyond panning's own names: a library's model by name, or a user's function.
LIBRARIES = ("torchvision", "timm")
_DOTTED = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"


def factory_form(value: str) -> bool:
    """Whether `value` reads ``package.module:function``."""
    return re.fullmatch(f"{_DOTTED}:{_DOTTED}", value) is not None


def model_choice(name: str, value: str) -> str:
    """--model: one of panning's models, ``torchvision:NAME`` / ``timm:NAME``, or ``package.module:function``."""
    library, _, rest = value.partition(":")
    if value in catalog.MODELS or (library in LIBRARIES and rest) or factory_form(value):
        return value
    raise UsageError(f"{name}: expected one of {', '.join(catalog.MODELS)}, torchvision:NAME, timm:NAME or "
                     f"package.module:function, got {value!r}")


def data_choice(name: str, value: str) -> str:
    """--data: one of panning's data sets, ``package.module:function``, or a path: a tensor file, an image folder."""
    if value in catalog.DATASETS or factory_form(value):
        return value
    if not Path(value).exists():
        raise UsageError(f"{name}: {value!r} is neither a data set ({', '.join(catalog.DATASETS)}), nor "
                         "package.module:function, nor an existing tensor file or image folder")
    return value


def mapping(value) -> dict:
    """The type of keyword-argument options: a mapping in YAML, or a YAML / JSON mapping as a flag's text."""
    import yaml

    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass  # the text itself: refused below, as not a mapping
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"expected a YAML mapping of name: value, got {value!r}")
    return value


def own_model(opts: dict) -> bool:
    """Whether --model (or the data set's default) is one of panning's own models."""
    return model_for(opts) in catalog.MODELS


def model_for(opts: dict) -> str:
    """The model a command builds: --model, else the data set's default (panning.catalog.DEFAULT_MODEL); data of
    one's own has no default."""
    if opts["model"] is None and opts["data"] not in catalog.DEFAULT_MODEL:
        raise UsageError(f"--model: required with --data {opts['data']} (panning's data sets have a default model, "
                         "one's own data has none)")
    return opts["model"] or catalog.DEFAULT_MODEL[opts["data"]]


def label(value: str) -> str:
    """A --model or --data value as a piece of a file name (a path's stem, ':' and '.' as '-')."""
    if value in catalog.MODELS or value in catalog.DATASETS:
        return value
    if not factory_form(value) and value.partition(":")[0] not in LIBRARIES:
        value = Path(value).stem or Path(value).name
    return "".join(c if c.isalnum() or c in "_-" else "-" for c in value)


def kwargs_label(opts: dict) -> str:
    """A file-name piece that tells apart runs with other --model-kwargs or --data-kwargs ("" without any): the
    first 8 hex digits of their SHA-256."""
    import hashlib
    import json

    given = {key: opts[key] for key in ("model_kwargs", "data_kwargs") if opts.get(key)}
    if not given:
        return ""
    return "-kw" + hashlib.sha256(json.dumps(given, sort_keys=True, default=str).encode()).hexdigest()[:8]


def recipe_for(opts: dict, keys: Sequence[str], **fields):
    """The panning.train.Recipe of the model (panning.train.RECIPES) with the options in `keys` that are set, and
    `fields`, over it, checked as it is built; a model of another library has no recipe: it trains with the
    Recipe's defaults and needs --epochs."""
    from ..train import RECIPES, Recipe

    name = model_for(opts)
    given = {key: opts[key] for key in keys if opts.get(key) is not None}
    if name not in RECIPES and "epochs" not in given:
        raise UsageError(f"--epochs: required for --model {name} (panning.train.RECIPES has recipes for "
                         f"{', '.join(RECIPES)} only)")
    return Recipe(**{**RECIPES.get(name, {}), **given, **fields})


def build_model(opts: dict, bundle):
    """The model of --model (else the data set's own) for `bundle`'s samples, initialized from --seed: panning's
    own at --width; a torchvision or timm model by name (``num_classes`` and, for timm, ``in_chans`` from the data,
    then --model-kwargs); or what ``package.module:function(**model_kwargs)`` returns. A model that cannot be built
    or cannot take one batch of the data is named as --model."""
    import torch

    from .. import models

    name = model_for(opts)
    kwargs = opts.get("model_kwargs") or {}
    if name in catalog.MODELS and kwargs:
        raise UsageError(f"--model-kwargs: panning's own models take none (their size is --width); got {kwargs}")
    if name not in catalog.MODELS and opts["width"] != 1.0:
        raise UsageError(f"--width: scales panning's own models only; give {name}'s size in --model-kwargs")
    # panning's own model: models.build refuses a bad --width (a ConfigError of `width`), fits a huge one
    refused = (UsageError, config.ConfigError) if name in catalog.MODELS else ()
    torch.manual_seed(opts["seed"])
    try:  # one check: the name gives a model (the keywords taken) that runs on one batch of the data
        if name in catalog.MODELS:  # the name is checked; models.build checks --width and the sample shape
            with torch.device("meta"):  # the size first, without memory: a huge --width is refused, not allocated
                size = sum(p.numel() for p in models.build(name, bundle.input_shape, bundle.num_classes,
                                                           width=opts["width"]).parameters())
            fits(size, f"--width: {opts['width']:g} makes {name}")
            model = models.build(name, bundle.input_shape, bundle.num_classes, width=opts["width"])
        else:
            model = _foreign_model(name, kwargs, bundle)
        was_training = model.training
        with torch.no_grad():
            model.eval()(bundle.train.tensors[0][:2])
    except refused:  # --width, named as the flag
        raise
    except Exception as error:  # a library not installed (its ImportError says what to install), a module not
        # found, a shape the model does not take, an unknown name, a refused keyword, not a model, the user's error
        why = str(error) if isinstance(error, ImportError) else (
            f"{name} with {kwargs or 'no keyword arguments'} gives no model that runs on {bundle.name}'s samples of "
            f"shape {tuple(bundle.input_shape)} ({_cause(error)})")
        raise UsageError(f"--model: {why}") from None
    return model.train(was_training)


def _foreign_model(name: str, kwargs: dict, bundle):
    """A torchvision or timm model by name, or the return value of a user's function (see build_model)."""
    from ..optional import require

    library, _, rest = name.partition(":")
    if library == "torchvision":
        models = require("torchvision", name).models
        return models.get_model(rest, weights=None, **{"num_classes": bundle.num_classes, **kwargs})
    if library == "timm":
        timm = require("timm", name)
        return timm.create_model(rest, pretrained=False, **{"num_classes": bundle.num_classes,
                                                            "in_chans": bundle.input_shape[0], **kwargs})
    return _function(name)(**kwargs)


def _function(spec: str):
    """The function ``package.module:function`` names, imported (this runs the module's code: the user's own) from
    PYTHONPATH or the current folder; a missing module or name raises Python's own error, which the caller names."""
    import importlib

    module, _, attribute = spec.partition(":")
    found = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def _cause(error: BaseException) -> str:
    """An error of a user's code or another library, as one short line: "TypeError: ..."."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


#: Copies of the weights a training run holds at once: the weights, their gradients, two optimizer moments.
_COPIES = 4


def fits(parameters: int, what: str) -> None:
    """Refuse a model whose training would not fit this machine's memory (float32 weights, gradients and two
    optimizer moments), naming its size after `what` (the option that sized it), before it is allocated."""
    needed = parameters * 4 * _COPIES
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        raise UsageError(f"{what} {parameters:,} parameters, {needed / 2**30:.1f} GiB to train, more than this "
                         f"machine's {memory / 2**30:.1f} GiB of memory")


def load_data(opts: dict, name: str | None = None, seed: int | None = None):
    """The data of --data and --seed (or `name`, `seed`) as a DataBundle: one of panning.data's data sets, a tensor
    file (``x``, ``y``, optionally ``x_test``, ``y_test``), an image folder (``image_size`` from --data-kwargs), or
    what ``package.module:function(**data_kwargs)`` returns: a DataBundle, a (train, test) pair or one Dataset /
    DataLoader (then a seeded fifth is the test split). Errors name --data, --data-dir or --data-kwargs."""
    from .. import data

    name = name or opts["data"]
    seed = opts["seed"] if seed is None else seed
    kwargs = opts.get("data_kwargs") or {}
    path = Path(name)
    if factory_form(name) and not path.exists():
        try:  # the user's module and function, called with the user's keyword arguments, and what it returned
            return _data_of(name, _function(name)(**kwargs), seed)
        except Exception as error:
            raise UsageError(f"--data: {name} with {kwargs or 'no keyword arguments'} gives no data panning can use "
                             f"({_cause(error)})") from None
    takes = {"image_size"} if name not in catalog.DATASETS and path.is_dir() else set()
    if set(kwargs) - takes:
        raise UsageError(f"--data-kwargs: --data {name} takes {', '.join(takes) or 'no keyword arguments'}; got "
                         f"{kwargs}")
    if name in catalog.DATASETS:  # a refused data_dir is a ConfigError of that field: named as --data-dir
        return data.load(name, seed=seed, data_dir=opts["data_dir"])
    try:
        if path.is_dir():
            return data.load_image_folder(path, seed=seed, name="--data", **kwargs)
        return data.load_tensor_file(path, seed=seed, name="--data")
    except ImportError as error:
        raise UsageError(f"--data: {error}") from None


def _data_of(name: str, value, seed: int):
    """A DataBundle of what a --data function returned: a DataBundle, a (train, test) pair or one Dataset /
    DataLoader (panning.data.bundle_of refuses anything else)."""
    from .. import data

    if isinstance(value, data.DataBundle):
        return value
    pair = value if isinstance(value, (tuple, list)) and len(value) == 2 else (value,)
    return data.bundle_of(*pair, name=name.rpartition(":")[2], seed=seed)


def load_masks(name: str, path: Path):
    """The masks file given as option `name`, read safely (panning.masks.Masks.load)."""
    from ..masks import Masks

    return Masks.load(path, name=name)


def made_for(opts: dict, model_name: str, bundle) -> dict:
    """What a file a command writes was made for: the model, its width and the data set (files record it; a
    command reading one compares it with its own)."""
    return {"model": model_name, "width": opts["width"], "data": bundle.name}


def describe(about: dict) -> str:
    """A model as a file records it (made_for): "cnn1d x4 for mnist1d"."""
    width = about.get("width")
    return (f"{about.get('model', 'an unnamed model')}" + (f" x{width:g}" if isinstance(width, (int, float)) else "")
            + (f" for {about['data']}" if about.get("data") else ""))


def masks_fit(name: str, masks, model, here: dict | None = None) -> None:
    """Masks (panning.masks.Masks) that cover parameters of `model` with their shapes; masks whose file says they
    were made for another model than `here` (made_for) are refused naming both."""
    if here is not None:
        if any(key in masks.about and masks.about[key] != here[key] for key in here):
            raise UsageError(f"{name}: made for {describe(masks.about)}; this model is {describe(here)}")
    masks.check(model, name=name)


# -- the options several commands share ------------------------------------------------------------------------

DATA = Option("data", str, "data set", "mnist1d", catalog.DATASETS)
#: --data of the commands that take one's own data too (docs/cli.md, "Your own model and data").
ANY_DATA = DATA.but(choices=None, check=data_choice,
                    help="data set (" + ", ".join(catalog.DATASETS) + "), or one's own: a tensor file with x and y, "
                         "an image folder, or package.module:function returning a Dataset")
DATA_KWARGS = Option("data-kwargs", mapping, "keyword arguments of a --data function (or image_size of an image "
                     "folder), a YAML mapping; usually set as data_kwargs: in --config")
DATA_DIR = Option("data-dir", Path, "folder of a local data set (the CIFAR python-pickle folder or its parent)")
MODEL = Option("model", str, "model; default: the data set's own ("
               + ", ".join(f"{m} for {d}" for d, m in catalog.DEFAULT_MODEL.items()) + ")", None, catalog.MODELS)
#: --model of the commands that take any model (docs/cli.md, "Your own model and data").
ANY_MODEL = MODEL.but(choices=None, check=model_choice, help=MODEL.help + "; one of " + ", ".join(catalog.MODELS)
                      + ", or torchvision:NAME, timm:NAME (where installed), or package.module:function returning "
                      "an nn.Module")
MODEL_KWARGS = Option("model-kwargs", mapping, "keyword arguments of a torchvision, timm or package.module:function "
                      "model, a YAML mapping; usually set as model_kwargs: in --config")
#: --width is checked by panning.models.build, which every command that takes it calls before any work.
WIDTH = Option("width", float, "width multiplier of the model's hidden layers / channels", 1.0)
#: The options of a pruning, a training recipe or a search (and --seed, which every command hands to one of them
#: or to panning.data.load first): checked as the command builds its panning.pbt.methods.PruneConfig,
#: panning.train.Recipe or panning.jackpot.SearchConfig, before any work (a refused field is named as its option).
#: Their meaning and help are the settings of panning.config.
SEED = Option("seed", int, "seed of the initialization, the data order and the data split", 0)
SPARSITY = Option("sparsity", float, config.SPARSITY.help, 0.9)
_RECIPE = "; default: the model's recipe"
EPOCHS = Option("epochs", int, f"{config.EPOCHS.help}{_RECIPE} (panning.train.RECIPES)")
BATCH_SIZE = Option("batch-size", int, config.BATCH_SIZE.help + _RECIPE)
LR = Option("lr", float, config.LR.help + _RECIPE)
MOMENTUM = Option("momentum", float, config.MOMENTUM.help + _RECIPE)
WEIGHT_DECAY = Option("weight-decay", float, config.WEIGHT_DECAY.help + _RECIPE)
DEVICE = Option("device", str, "torch device: cpu, cuda, cuda:<i>", "cpu", check=device)
def threads(name: str, value) -> int:
    """A thread count for torch: at least 1, at most this machine's CPUs (more only contend for them)."""
    cpus = os.cpu_count() or 1
    if not 1 <= value <= cpus:
        raise UsageError(f"{name}: expected a thread count in [1, {cpus}] (this machine's CPUs), got {value}")
    return value


THREADS = Option("threads", int, "CPU threads for torch; default: torch's choice (1 is as fast for the small "
                 "models and far faster on a busy machine)", check=threads)
PROGRESS = Option("progress", boolean, "progress bars (shown only when stderr is a terminal)", True)
#: Input files are checked by their readers (panning.io.load_tensors behind masks, weights and checkpoints;
#: panning.models.read_spec; the config's YAML): a missing, unreadable or damaged one is named as its option before
#: any work.
MASKS = Option("masks", Path, "a masks file (panning prune --out, panning jackpot) to hold fixed")
CONFIG = Option("config", Path, "YAML file of options (keys as the flags); flags override it")


# -- parser, config, resolve ------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, ``panning <command>: error: ...``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """One flag per option (``--x`` / ``--no-x`` for on/off options), and ``--config``."""
    for opt in (*options, CONFIG):
        if opt.type is boolean:
            parser.add_argument(opt.name, dest=opt.dest, action=argparse.BooleanOptionalAction,
                                help=opt.help_text())
        else:
            parser.add_argument(opt.name, dest=opt.dest, type=opt.type, choices=opt.choices, help=opt.help_text())


def read_config(path: Path, options: Sequence[Option]) -> dict:
    """The options set by a YAML config file, converted like their flags (not yet checked)."""
    import yaml

    try:
        raw = mapping(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValueError) as e:
        raise UsageError(f"--config: {str(path)!r}: {' '.join(str(e).split())}") from None
    by_dest = {opt.dest: opt for opt in options}
    values = {}
    for key, value in raw.items():
        opt = by_dest.get(key.replace("-", "_"))
        if opt is None:
            known = ", ".join(o.flag for o in options)
            raise UsageError(f"--config: {str(path)!r}: unknown option {key!r}; known: {known}")
        try:
            values[opt.dest] = _convert(opt, value)
        except (TypeError, ValueError) as e:  # a wrong kind, a choice not offered, the type's own refusal
            raise UsageError(f"--config: {str(path)!r}: option {key!r}: {e}") from None
    return values


#: What a YAML value of an option of each type must be; floats take strings too, because YAML 1.1 reads ``1e-3``
#: (no dot) as one. Numbers are never bools, and ints never floats (no silent truncation).
_YAML_KINDS = {int: ((int,), "an integer"), float: ((int, float, str), "a number"), bool: ((bool,), "true or false")}


def _convert(opt: Option, value):
    """A YAML value as the option's flag would give it: of the option's kind, one of its choices; null only where
    the option has no default (null: the command decides)."""
    if value is None and opt.default is None:
        return None
    kinds, what = _YAML_KINDS.get(opt.type, ((object,), "a value"))
    if (value is None or not isinstance(value, kinds) or (opt.type in (int, float) and isinstance(value, bool))
            or (opt.choices is not None and value not in opt.choices)):
        shown = f"one of {', '.join(opt.choices)}" if opt.choices is not None else what
        default = opt.help_text().rpartition("(default: ")[2].rstrip(")")
        leave = f" (leave it out for its default, {default})" if value is None else ""
        raise ValueError(f"expected {shown}, got {value!r}{leave}")
    return opt.type(value)


def resolve(options: Sequence[Option], args: argparse.Namespace) -> dict:
    """The options a command runs with (dest -> value): defaults < config file < flags, every set value checked."""
    given = {opt.dest: getattr(args, opt.dest) for opt in options if getattr(args, opt.dest, None) is not None}
    from_file = read_config(args.config, options) if args.config is not None else {}
    values = {opt.dest: opt.default for opt in options} | from_file | given
    for opt in sorted(options, key=lambda opt: getattr(opt.check, "imports", False)):  # cheap checks first
        if opt.check is not None and values[opt.dest] is not None:  # a refusal is a ValueError naming the option
            values[opt.dest] = opt.check(opt.name, values[opt.dest])
    by_dest = {opt.dest: opt for opt in options}
    for opt in options:
        if opt.requires is not None and values[opt.dest] is not None and not values[opt.requires]:
            raise UsageError(f"{opt.name}: has no effect without {by_dest[opt.requires].name}; give both or "
                             f"neither")
    if values.get("progress"):  # bars only where someone watches: not in logs, pipes or CI
        values["progress"] = sys.stderr.isatty()
    return values
