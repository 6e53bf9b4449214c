"""Configuration objects checked once, when built: the boundary where a user's settings enter the library.

A configuration is a frozen dataclass deriving from :class:`Config` whose fields are declared with
:func:`setting`, each with its check (a function of `panning.checks`, called as ``check(name, value)``). Building
one checks every field that is set (None means "the default the configuration derives", where a field allows it),
then the checks that relate fields (:meth:`Config.relate`); the library functions that take the object trust it.
A refused field raises :class:`ConfigError`, a ValueError that carries the field's name as an attribute: the
command line names the matching ``--flag`` from it (docs/cli.md), never from the message's text.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

from . import checks


class ConfigError(ValueError):
    """A setting refused: `field` names it, `reason` says why; reads ``"<field>: <reason>"``. Raised by the
    configurations, and by a library function for an argument whose name a caller may want to map to its own
    (`data.load`'s ``data_dir``, a run's ``checkpoint`` of another run)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def setting(default: Any = dataclasses.MISSING, *, check: Callable[[str, Any], Any] | None = None) -> Any:
    """A field of a :class:`Config` with its default and its check, run once when the configuration is built."""
    return dataclasses.field(default=default, metadata={"check": check})


def sparsity(name: str, value) -> float:
    """panning.checks.sparsity as a check of a named setting: one meaning of sparsity everywhere."""
    return checks.sparsity(value, name)


def one_of(choices: Collection) -> Callable[[str, Any], Any]:
    """The check of a setting that takes one of `choices`."""
    return lambda name, value: checks.choice(name, value, choices)


class Config:
    """Base of the configuration dataclasses (declare them ``@dataclass(frozen=True)``): checks every field once."""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value, check = getattr(self, spec.name), spec.metadata.get("check")
            if check is not None and value is not None:
                try:
                    check(spec.name, value)
                except (TypeError, ValueError) as error:  # panning.checks: "<name>: <reason>"
                    raise ConfigError(spec.name, str(error).removeprefix(f"{spec.name}: ")) from None
        self.relate()

    def relate(self) -> None:
        """The checks that relate fields (one value is fine alone but not with another), refusing with a
        ConfigError."""
