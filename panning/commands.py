"""The option tables of ``panning`` commands: one table builds the argparse flags and checks ``--config`` YAML.

A command is a :class:`Command`: a help line, its :class:`Option` table, defaults and ``run(options) -> exit
status``. Precedence of values: command-line flag > config file > the command's defaults.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml


@dataclass(frozen=True)
class Option:
    """One command option: ``--flag`` on the command line, ``flag`` (or ``flag_with_underscores``) in YAML."""

    flag: str
    type: Callable[[Any], Any]
    help: str
    choices: Optional[Sequence[str]] = None

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")


@dataclass(frozen=True)
class Command:
    """A subcommand: ``run`` receives the resolved options (dest -> value) and returns the exit status."""

    help: str
    run: Callable[[dict], int]
    options: tuple[Option, ...] = ()
    defaults: dict = field(default_factory=dict)


def boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {value!r}")


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for opt in options:
        if opt.type is boolean:
            parser.add_argument(f"--{opt.flag}", dest=opt.dest, action=argparse.BooleanOptionalAction, help=opt.help)
        else:
            parser.add_argument(f"--{opt.flag}", dest=opt.dest, type=opt.type, choices=opt.choices, help=opt.help)
    parser.add_argument("--config", type=Path, help="YAML file of options (keys as the flags); flags override it")


def read_config(path: Path, options: Sequence[Option]) -> dict:
    """The options set by a YAML config file, converted and checked like their flags."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"config {str(path)!r} could not be read: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config {str(path)!r} must be a mapping of option: value")
    by_dest = {opt.dest: opt for opt in options}
    values = {}
    for key, value in raw.items():
        opt = by_dest.get(str(key).replace("-", "_"))
        if opt is None:
            known = ", ".join(o.flag for o in options)
            raise ValueError(f"config {str(path)!r}: unknown option {key!r}; known: {known}")
        try:
            value = None if value is None else _convert(opt, value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"config {str(path)!r}: option {key!r}: {e}") from None
        if opt.choices is not None and value not in opt.choices:
            choices = ", ".join(opt.choices)
            raise ValueError(f"config {str(path)!r}: option {key!r} must be one of {choices}; got {value!r}")
        values[opt.dest] = value
    return values


def _convert(opt: Option, value):
    """A YAML value through the option's type; numbers must be numbers (no bools, no silently truncated floats).
    Strings are accepted for floats because YAML 1.1 reads ``1e-3`` (no dot) as a string."""
    if opt.type in (int, float) and isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if opt.type is int and not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return opt.type(value)


def resolve(command: Command, args: argparse.Namespace) -> dict:
    """Merge the command's defaults, the config file and the flags given on the command line."""
    given = {opt.dest: getattr(args, opt.dest) for opt in command.options if getattr(args, opt.dest) is not None}
    config = read_config(args.config, command.options) if args.config is not None else {}
    return {**command.defaults, **config, **given}
