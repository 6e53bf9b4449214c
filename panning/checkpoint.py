"""The checkpoint of a resumable run (training, jackpot search): written atomically, read without running code,
refused when another kind of run or a run with other settings wrote it.

A checkpoint is one torch file holding ``format``, ``kind`` (what wrote it), ``config`` (every setting that must
agree for a later call to continue the run rather than start another) and the run's own state. :func:`save` writes
it through `panning.io.save_atomically`; :func:`load` reads it through `panning.io.load_tensors` and compares the
kind and the settings, naming those that differ.
"""
from __future__ import annotations

import os

from .config import ConfigError
from .io import load_tensors, save_atomically

FORMAT = 1
#: What a caller tells to start afresh instead of continuing a checkpoint of another run.
AFRESH = "start afresh with another checkpoint (or delete this one)"


def save(path: str | os.PathLike, kind: str, config: dict, state: dict) -> None:
    """Write the run's `state` with its `kind` and `config` to `path`, atomically."""
    save_atomically(dict(format=FORMAT, kind=kind, config=config, **state), path)


def load(path: str | os.PathLike, kind: str, config: dict) -> dict:
    """The state a run of `kind` with `config` wrote to `path`; a file that is unreadable, unsafe, of another kind
    or written with other settings raises a ValueError naming ``checkpoint`` (a ConfigError of that field where the
    file is readable: the settings that differ named)."""
    state = load_tensors(path, name="checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("kind", kind) != kind:
        misfit = f"is not a {kind} checkpoint (format {FORMAT})"
    else:
        differ = sorted(key for key in config if state["config"].get(key) != config[key])
        if not differ:
            return state
        both = "; ".join(f"{key} {state['config'].get(key)!r} there, {config[key]!r} here" for key in differ)
        misfit = f"belongs to another run ({both}); continue with its settings, or {AFRESH}"
    raise ConfigError("checkpoint", f"{os.fspath(path)!r} {misfit}")
