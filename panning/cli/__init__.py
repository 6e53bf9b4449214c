"""The ``panning`` command line: ``panning <command> [options]`` (see docs/cli.md).

Each command is a module of this package with ``HELP`` (one line), ``OPTIONS`` (its :class:`~.options.Option`
table, which carries every default) and ``run(options) -> exit status``; a module may add ``resume_hint(options)``,
the line printed when the run is stopped. :func:`main` is the same for every command: parse, resolve the options
(defaults < ``--config`` < flags, all checked), check the environment, run. Any bad option or input file ends
the command with one line ``panning <command>: error: ...`` and exit status 2, before any work starts (a value
the library refuses, panning.config.ConfigError from its configuration objects or its checks, is named by the
command's flag of that field); a file that cannot be written (panning.io.WriteError) or a training run that
diverges (panning.train.Diverged) ends it with one such line and exit status 1; Ctrl-C or SIGTERM end it with one
line (and how to resume, where the command can) and exit status 130.

Building the parser imports no torch (the command modules load their implementation inside ``run``), so
``panning --help`` answers at once.
"""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from . import agent, bench, demo, evaluate, jackpot, prune, train
from .options import Option, Parser, UsageError, add_options, resolve

COMMANDS: dict[str, ModuleType] = {"train": train, "prune": prune, "jackpot": jackpot, "evaluate": evaluate,
                                   "agent": agent, "bench": bench, "demo": demo}

#: Exit status of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
INTERRUPTED = 130
#: Exit status of a command whose work failed (a file could not be written, the training diverged): not a bad
#: option.
FAILED = 1


def parser() -> Parser:
    """The parser of every command, built from the option tables alone."""
    top = Parser(prog="panning", description="Find sparse sub-networks fast: Neural Network Panning and Lottery "
                 "Jackpots on compiled kernels. Options of each command: panning <command> --help.")
    sub = top.add_subparsers(dest="command", required=True, metavar="command", parser_class=Parser)
    for name, command in COMMANDS.items():
        add_options(sub.add_parser(name, help=command.HELP, description=command.HELP), command.OPTIONS)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    args = parser().parse_args(argv)
    command = COMMANDS[args.command]
    options: dict = {}
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        options = resolve(command.OPTIONS, args)
        _prepare(options)
        return command.run(options)
    except (ValueError, OSError) as error:  # UsageError, the library's own argument errors, a failed write
        print(f"panning {args.command}: error: {_one_line(_flagged(error, command.OPTIONS))}", file=sys.stderr)
        return FAILED if _failed(error) else 2
    except ArithmeticError as error:  # panning.train.Diverged: the run's loss became NaN
        print(f"panning {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        hint = getattr(command, "resume_hint", lambda _: None)(options) if options else None
        print(f"panning {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _prepare(options: dict) -> None:
    """What every command needs before its work: the thread count, and a usable PANNING_BACKEND."""
    if options.get("threads") is not None:
        import torch

        torch.set_num_threads(options["threads"])
    if os.environ.get("PANNING_BACKEND"):
        from .. import ops

        backend = ops.dispatch.requested(None)  # the ops' own check of the name, naming PANNING_BACKEND
        known = ops.backends()
        if not known[backend]["available"]:
            raise UsageError(f"PANNING_BACKEND={backend}: not available here: {known[backend]['reason']}")
        device = options.get("device", "cpu")  # commands without --device run on the CPU; None: chosen later
        device = str(device).split(":")[0] if device is not None else None
        if device is not None and device not in known[backend]["devices"]:
            raise UsageError(f"PANNING_BACKEND={backend}: does not run on {device} "
                             f"(runs on {', '.join(known[backend]['devices'])})")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _failed(error: BaseException) -> bool:
    """Whether `error` is panning.io's WriteError (only a command that wrote has imported panning.io, and torch)."""
    io = sys.modules.get("panning.io")
    return io is not None and isinstance(error, io.WriteError)


def _flagged(error: BaseException, options: Sequence[Option]) -> BaseException | str:
    """A refused value (panning.config.ConfigError, whose `field` names it) as the command's flag of that name,
    where the command has such an option; any other error as it is."""
    field = getattr(error, "field", None)
    flag = next((opt.name for opt in options if opt.dest == field), None)
    return f"{flag}: {error.reason}" if flag is not None else error


def _one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split()) or type(error).__name__
