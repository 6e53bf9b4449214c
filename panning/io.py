"""Files: the one atomic writer every file of panning goes through, the one safe loader of tensor files, and
derived random streams for the long-running loops.

Writing: :func:`atomic_path` hands out a temporary name beside the target; whatever writes there (torch.save,
safetensors, matplotlib (:func:`save_figure`), plain text) is flushed to disk and renamed over the target only
when it succeeded, so a crash or an error leaves either the old file or the new one, never a torn or stray one.

Reading: :func:`load_tensors` reads a torch.save file (``weights_only``, never unpickling code) or a safetensors
file, recognized by content, and turns every way a file can be wrong (missing, empty, truncated, garbage, a pickle
that wants to run code) into a one-line ``ValueError`` naming the argument.
"""
from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_ZIP = b"PK\x03\x04"  # torch.save's zip container
_PICKLE = 0x80  # first byte of a pickle (protocol 2+): torch's legacy format, or a bare pickle


def _file_mode() -> int:
    """0o666 less the process's umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that go by the suffix still work); when the
    block ends without error, flush it to disk, give it the permissions a plain `open` would (safetensors writes
    owner-only files) and rename it over `path`; on any error, remove it. The folder of `path` must exist."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_atomically(obj, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` atomically (see :func:`atomic_path`), creating the folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a dict of tensors atomically: a torch.save file if `path` ends in .pt or .pth (loadable with
    weights_only=True), safetensors otherwise."""
    with atomic_path(path) as tmp:
        if Path(path).suffix in (".pt", ".pth"):
            torch.save(tensors, tmp)
        else:
            save_file(tensors, os.fspath(tmp), metadata=metadata)


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> None:
    """Lay out a matplotlib figure, write it to `path` atomically (the format from the suffix) and close it."""
    import matplotlib.pyplot as plt  # only when a figure is saved: importing panning.io stays light

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_tensors(path: str | os.PathLike, *, device: torch.device | str = "cpu", name: str = "path"):
    """The object stored in a torch.save file (read with weights_only=True) or a safetensors file (a dict of
    tensors), recognized by content. Never executes code from the file; every unreadable file raises a one-line
    ValueError that starts with `name`."""
    shown = repr(os.fspath(path))
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise ValueError(f"{name}: no file at {shown}") from None
    except IsADirectoryError:
        raise ValueError(f"{name}: {shown} is a folder, not a file") from None
    except OSError as error:
        raise ValueError(f"{name}: cannot read {shown} ({error.strerror or error})") from None
    if not head:
        raise ValueError(f"{name}: {shown} is empty")
    if head == _ZIP or head[0] == _PICKLE:
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols it may not support
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError as error:
            if "weights_only" in str(error) or "GLOBAL" in str(error):
                raise ValueError(f"{name}: {shown} is not a safe checkpoint: loading it would run code from the "
                                 "file, which panning never does") from None
            raise ValueError(f"{name}: {shown} is damaged (not a readable torch file)") from None
        except (RuntimeError, EOFError, ValueError, OSError):
            raise ValueError(f"{name}: {shown} is truncated or damaged (not a readable torch file)") from None
    try:
        return load_file(os.fspath(path), device=str(device))
    except (SafetensorError, OSError, ValueError):
        raise ValueError(f"{name}: {shown} is neither a torch file nor a readable safetensors file (truncated, "
                         "damaged or another format)") from None


def derived_generator(*seed: int) -> torch.Generator:
    """A CPU generator that depends only on the given integers (e.g. seed, epoch): a resumed run redraws
    exactly what an uninterrupted one drew."""
    state = np.random.SeedSequence(list(seed)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
