"""Configuration objects checked once, when built: the boundary where a user's settings enter the library.

A configuration is a frozen dataclass deriving from :class:`Config` whose fields are declared with
:func:`setting`, each with its check (a function of `panning.checks`, called as ``check(name, value)``). Building
one checks every field that is set (None means "the default the configuration derives", where a field allows it),
then the checks that relate fields (:meth:`Config.relate`); the library functions that take the object trust it.
A refused field raises :class:`ConfigError` (panning.checks' refusal), a ValueError that carries the field's name
as an attribute: the command line names the matching ``--flag`` from it (docs/cli.md), never from the message's
text.

A setting with one meaning in several configurations (the seed, the sparsity, the training settings, the
checkpoint interval) is declared once below as a :class:`Setting`, with its check and help; each configuration
takes it with its own default (``seed: int = SEED.field(0)``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

from . import checks
from .checks import ConfigError

__all__ = ["BATCH_SIZE", "CHECKPOINT_EVERY", "Config", "ConfigError", "EPOCHS", "LR", "MOMENTUM", "SEED", "SPARSITY",
           "Setting", "WEIGHT_DECAY", "one_of", "setting"]


def setting(default: Any = dataclasses.MISSING, *, check: Callable[[str, Any], Any] | None = None) -> Any:
    """A field of a :class:`Config` with its default and its check, run once when the configuration is built."""
    return dataclasses.field(default=default, metadata={"check": check})


@dataclasses.dataclass(frozen=True)
class Setting:
    """A setting with one meaning wherever it appears: what it is (`help`, which the command line's option shows
    too) and its `check`; :meth:`field` makes it a field of a configuration with that configuration's default."""

    help: str
    check: Callable[[str, Any], Any]

    def field(self, default: Any = dataclasses.MISSING) -> Any:
        """This setting as a field of a :class:`Config`, with `default` (none: the configuration requires it)."""
        return setting(default, check=self.check)


def one_of(choices: Collection) -> Callable[[str, Any], Any]:
    """The check of a setting that takes one of `choices`."""
    return lambda name, value: checks.choice(name, value, choices)


# -- the settings of several configurations (train.Recipe, jackpot.SearchConfig, pbt.methods.PruneConfig,
#    pbt.rl.agent.AgentConfig) -------------------------------------------------------------------------------------

SEED = Setting("seed of the run's random draws, an int in [0, 2**32)", check=checks.seed)
SPARSITY = Setting("fraction of the prunable weights removed, in [0, 1)", check=checks.sparsity)
EPOCHS = Setting("training epochs", check=checks.positive_int)
BATCH_SIZE = Setting("batch size", check=checks.positive_int)
LR = Setting("peak learning rate", check=checks.positive)
MOMENTUM = Setting("SGD momentum, in [0, 1)", check=checks.momentum)
WEIGHT_DECAY = Setting("L2 weight decay", check=checks.non_negative)
CHECKPOINT_EVERY = Setting("steps between checkpoints", check=checks.positive_int)


class Config:
    """Base of the configuration dataclasses (declare them ``@dataclass(frozen=True)``): checks every field once."""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value, check = getattr(self, spec.name), spec.metadata.get("check")
            if check is not None and value is not None:
                check(spec.name, value)  # a panning.checks function: a ConfigError naming the field
        self.relate()

    def relate(self) -> None:
        """The checks that relate fields (one value is fine alone but not with another), refusing with a
        ConfigError."""
