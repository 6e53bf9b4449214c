"""Files: the one atomic writer every file of panning goes through, the one safe loader of tensor files, and
derived random streams for the long-running loops.

Writing: :func:`atomic_path` hands out a temporary name beside the target; whatever writes there (torch.save,
safetensors, matplotlib (:func:`save_figure`), plain text) is flushed to disk and renamed over the target only when
it succeeded, so a crash or an error leaves either the old file or the new one, never a torn or stray one
(:func:`atomic_folder` does the same for a folder of files). Missing folders are created, and removed again when the
write fails, so a failed run leaves no empty folder; a full disk, a missing permission or a vanished device is one
:class:`WriteError` naming the file and the cause, whichever writer met it.

Reading: :func:`load_tensors` reads a torch.save file (``weights_only``, never unpickling code) or a safetensors
file, recognized by content, and turns every way a file can be wrong (missing, empty, truncated, garbage, a pickle
that wants to run code) into a one-line ``ValueError`` naming the argument and the cause.
"""
from __future__ import annotations

import errno
import hashlib
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import ConfigError

_ZIP = b"PK\x03\x04"  # torch.save's zip container
_PICKLE = 0x80  # first byte of a pickle (protocol 2+): torch's legacy format, or a bare pickle


def _file_mode() -> int:
    """0o666 less the process's umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


class WriteError(OSError):
    """A file could not be written (no space, no permission, a vanished device): the message names the file and
    the cause. Nothing of the attempt is left behind and a previous version of the file is unchanged."""


def _write_failed(path: Path, error: BaseException, free: int | None) -> WriteError:
    """The WriteError of a failed write of `path`: the OS's reason, or for writers that hide it (torch.save
    reports a full disk as "unexpected pos"), a full disk when the folder had no space left."""
    text = " ".join(str(error).split())
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text or free == 0:
        cause = "no space left on the device"
    elif isinstance(error, OSError) and error.strerror:
        cause = error.strerror[0].lower() + error.strerror[1:]
    else:
        cause = text or type(error).__name__
    kept = " (its previous version is unchanged)" if path.exists() else ""
    return WriteError(f"cannot write {str(path)!r}: {cause}{kept}")


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _missing_folders(folder: Path) -> list[Path]:
    """The folders from `folder` up that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; a folder something else wrote into stays
        try:
            folder.rmdir()
        except OSError:
            break


def _from_file_system(error: BaseException, free: int | None) -> bool:
    """Whether a writer's error comes from the file system: an OSError, or the error torch.save (RuntimeError from
    its zip writer) or safetensors (an "I/O error") wraps one in, or any of theirs on a full disk."""
    if isinstance(error, WriteError) or not isinstance(error, (OSError, RuntimeError, SafetensorError)):
        return False
    text = str(error)
    return isinstance(error, OSError) or free == 0 or any(
        sign in text for sign in ("I/O error", "inline_container", "No space left"))


@contextmanager
def _guarded(target: Path, tmp: Path, remove) -> Iterator[None]:
    """Run a write of `target` through `tmp`: create the missing folders above it first; on any error remove
    `tmp` (with `remove`) and the folders made, and turn a file-system error into one WriteError."""
    made = _missing_folders(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException as error:
        free = _free_bytes(target.parent) if target.parent.exists() else None
        free = 0 if free is not None and free < _SLACK else free
        remove(tmp)
        _remove_empty(made)
        if _from_file_system(error, free):
            raise _write_failed(target, error, free) from None
        raise


#: Free space below which a failed write is reported as a full disk (a file system's last blocks are reserved).
_SLACK = 64 * 1024


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that go by the suffix still work); when the
    block ends without error, flush it to disk, give it the permissions a plain `open` would (safetensors writes
    owner-only files) and rename it over `path`. Missing folders above `path` are created. On any error the
    temporary file and the folders made are removed and a file-system error (full disk, no permission) is raised
    as one :class:`WriteError` naming `path` and the cause."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    with _guarded(path, tmp, lambda t: t.unlink(missing_ok=True)):
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _FILE_MODE)
        os.replace(tmp, path)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`atomic_path` for a folder of files: yield a temporary folder beside `path`; when the block ends
    without error, flush every file in it and rename it over `path` (an existing `path` is replaced in two
    renames); on any error remove it, as :func:`atomic_path` does."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _guarded(path, tmp, lambda t: shutil.rmtree(t, ignore_errors=True)):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)


@contextmanager
def folder_lock(folder: str | os.PathLike, name: str = "folder") -> Iterator[Path]:
    """Hold `folder` for this process while the block runs: a file `.lock` in it holding the process id, created
    exclusively. A folder held by another live process raises a ValueError starting with `name`; the lock of a
    process that has ended is taken over. The lock is removed at the end, and the folder too if it was made here
    and nothing else was written into it."""
    folder = Path(folder)
    lock = folder / LOCK
    made = _missing_folders(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE)
                break
            except FileExistsError:
                holder = _lock_holder(lock)
                if holder is not None:
                    raise ConfigError(name, f"{str(folder)!r} is in use by another run (process {holder}, "
                                            f"lock file {str(lock)!r}); wait for it to end, or give another "
                                            "folder") from None
                lock.unlink(missing_ok=True)  # its process has ended: take the folder over
        try:
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
        except BaseException:
            lock.unlink(missing_ok=True)
            raise
    except OSError as error:
        _remove_empty(made)
        raise _write_failed(lock, error, _free_bytes(folder)) from None
    except BaseException:
        _remove_empty(made)
        raise
    try:
        yield folder
    finally:
        lock.unlink(missing_ok=True)
        _remove_empty(made)


LOCK = ".lock"


def _lock_holder(lock: Path) -> int | None:
    """The id of the live process that holds `lock`, or None if that process has ended (or the file is gone)."""
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None if pid <= 0 else pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def save_atomically(obj, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` atomically (see :func:`atomic_path`)."""
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
    tensors), recognized by content. Never executes code from the file; an unreadable file raises a one-line
    ValueError that starts with `name` and says why (missing, a folder, empty, unsafe, truncated, damaged)."""
    loaded, unreadable = _read_tensors(path, device, repr(os.fspath(path)))
    if unreadable:
        raise ValueError(f"{name}: {unreadable}")
    return loaded


def _read_tensors(path: str | os.PathLike, device: torch.device | str, shown: str) -> tuple[object, str]:
    """(the object in the tensor file `path`, "") or (None, why it cannot be read, about `shown`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        return None, f"no file at {shown}"
    except IsADirectoryError:
        return None, f"{shown} is a folder, not a file"
    except OSError as error:
        return None, f"cannot read {shown} ({error.strerror or error})"
    if not head:
        return None, f"{shown} is empty"
    if head == _ZIP or head[0] == _PICKLE:
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols it may not support
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(path, map_location=device, weights_only=True), ""
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
            if isinstance(error, pickle.UnpicklingError) and ("weights_only" in str(error) or "GLOBAL" in str(error)):
                return None, (f"{shown} is not a safe checkpoint: loading it would run code from the file, which "
                              "panning never does")
            return None, f"{shown} is truncated or damaged (not a readable torch file)"
    try:
        return load_file(os.fspath(path), device=str(device)), ""
    except (SafetensorError, OSError, ValueError):
        return None, (f"{shown} is neither a torch file nor a readable safetensors file (truncated, damaged or "
                      "another format)")


def tensor_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file ({} for any other file, or one without)."""
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError):
        return {}


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex): the identity of an input a result depends on."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def derived_generator(*seed: int) -> torch.Generator:
    """A CPU generator that depends only on the given integers (e.g. seed, epoch): a resumed run redraws
    exactly what an uninterrupted one drew."""
    state = np.random.SeedSequence(list(seed)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
