"""panning.io: the one atomic writer (nothing torn or stray on any failure) and the one safe loader."""
from __future__ import annotations

import errno
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from panning.io import (
    WriteError,
    atomic_folder,
    atomic_path,
    folder_lock,
    load_tensors,
    save_atomically,
    save_tensors,
    write_text,
)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_temporary_file_keeps_the_suffix_and_is_renamed_into_place(tmp_path):
    target = tmp_path / "plot.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_writers_round_trip(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([True, False])}
    save_tensors(tensors, tmp_path / "t.safetensors", metadata={"k": "v"})
    save_tensors(tensors, tmp_path / "t.pt")
    for loaded in (load_file(str(tmp_path / "t.safetensors")), torch.load(tmp_path / "t.pt", weights_only=True),
                   load_tensors(tmp_path / "t.safetensors"), load_tensors(tmp_path / "t.pt")):
        assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    save_atomically({"step": 3}, tmp_path / "new" / "ckpt.pt")  # checkpoints create their folder
    assert torch.load(tmp_path / "new" / "ckpt.pt", weights_only=True) == {"step": 3}
    write_text(tmp_path / "x.txt", "hello")
    assert (tmp_path / "x.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "t.pt", "t.safetensors", "x.txt"]


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    """safetensors alone writes owner-only files; through the writer every file is as open() would make it."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    save_tensors({"a": torch.zeros(2)}, tmp_path / "t.safetensors")
    write_text(tmp_path / "x.txt", "hello")
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("t.safetensors", "x.txt")} == {expected}


def test_writing_into_a_missing_folder_creates_it_and_a_failed_write_removes_it_again(tmp_path):
    write_text(tmp_path / "made" / "x.txt", "hello")
    assert (tmp_path / "made" / "x.txt").read_text() == "hello"
    with pytest.raises(RuntimeError, match="the writer failed"):
        with atomic_path(tmp_path / "run" / "deeper" / "x.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made"]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["torch", "safetensors", "text", "folder"])
def test_a_full_disk_is_one_write_error_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch, writer):
    """Every writer's way of failing on a full disk (torch.save's "unexpected pos", safetensors' I/O error, a
    plain OSError) is the same WriteError; the old file is kept and no temporary file or new folder remains."""
    target = tmp_path / "old.pt"
    target.write_bytes(b"old")
    tensors = {"w": torch.zeros(10)}
    if writer == "torch":  # torch.save reports a full disk as a RuntimeError of its zip writer, saying no more
        monkeypatch.setattr("panning.io._free_bytes", lambda folder: 0)
        monkeypatch.setattr(torch.serialization, "_open_zipfile_writer",
                            lambda f: (_ for _ in ()).throw(RuntimeError("[enforce fail at inline_container.cc:672] "
                                                                         ". unexpected pos 6656 vs 6560")))
        write, path = (lambda: save_atomically(tensors, tmp_path / "new" / "old.pt")), tmp_path / "new" / "old.pt"
        target = path
    elif writer == "safetensors":
        monkeypatch.setattr("panning.io.save_file", lambda *a, **k: (_ for _ in ()).throw(
            SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")))
        path = tmp_path / "new" / "m.safetensors"
        write = lambda: save_tensors(tensors, path)  # noqa: E731
    elif writer == "text":
        monkeypatch.setattr(Path, "write_text", _no_space)
        write, path = (lambda: write_text(target, "new")), target
    else:
        def write():
            with atomic_folder(tmp_path / "snapshots" / "step-1") as folder:
                (folder / "a.bin").write_bytes(b"a")
                _no_space()
        path = tmp_path / "snapshots" / "step-1"
    with pytest.raises(WriteError) as error:
        write()
    assert str(error.value).startswith(f"cannot write {str(path)!r}: no space left on the device")
    assert isinstance(error.value, OSError)  # the command line's one-line handler takes it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]
    assert (tmp_path / "old.pt").read_bytes() == b"old"


def test_a_real_full_disk(tmp_path):
    """A 64 KiB tmpfs, where root may mount one: torch.save's own failure there becomes the same WriteError."""
    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        write_text(folder / "small.txt", "kept")
        for write in (lambda path: save_atomically({"w": torch.zeros(100_000)}, path),
                      lambda path: save_tensors({"w": torch.zeros(100_000)}, path.with_suffix(".safetensors"))):
            with pytest.raises(WriteError, match="no space left on the device"):
                write(folder / "run" / "big.pt")
        assert [p.name for p in folder.iterdir()] == ["small.txt"]
        with pytest.raises(OSError), open(folder / "fill", "wb") as f:  # the last blocks
            f.write(bytes(1 << 20))
        with pytest.raises(WriteError, match=r"lock': no space left on the device"):
            with folder_lock(folder / "ck"):
                pass
        assert sorted(p.name for p in folder.iterdir()) == ["fill", "small.txt"]
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_folder_is_held_by_one_process_at_a_time(tmp_path):
    with folder_lock(tmp_path / "ckpt", "checkpoint"):
        lock = tmp_path / "ckpt" / ".lock"
        assert lock.read_text() == str(os.getpid())
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            lock.write_text(str(other.pid))  # as if the other process held it
            with pytest.raises(ValueError, match=rf"^checkpoint: '.*ckpt' is in use by another run \(process "
                                                 rf"{other.pid}, lock file"):
                with folder_lock(tmp_path / "ckpt", "checkpoint"):
                    pass
        finally:
            other.kill()
            other.wait()
        with folder_lock(tmp_path / "ckpt", "checkpoint"):  # its process has ended: taken over
            assert lock.read_text() == str(os.getpid())
    assert not (tmp_path / "ckpt").exists()  # made for the run, nothing written into it: removed


class Code:
    def __reduce__(self):
        return (print, ("this ran",))


def test_loading_never_runs_code_and_names_the_argument(tmp_path, capsys):
    torch.save({"w": Code()}, tmp_path / "zip.pt")
    (tmp_path / "bare.pkl").write_bytes(pickle.dumps({"w": Code()}))
    for name in ("zip.pt", "bare.pkl"):
        with pytest.raises(ValueError) as error:
            load_tensors(tmp_path / name, name="--weights")
        assert str(error.value) == (f"--weights: '{tmp_path / name}' is not a safe checkpoint: loading it would run "
                                    "code from the file, which panning never does")
    assert "this ran" not in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"^--weights: '.*' is a folder, not a file$"):
        load_tensors(tmp_path, name="--weights")


@pytest.mark.parametrize("content, cause", [
    (None, "no file at '{}'"),
    (b"", "'{}' is empty"),
    ("half", "'{}' is truncated or damaged (not a readable torch file)"),
    (b"\x00" * 16, "'{}' is neither a torch file nor a readable safetensors file (truncated, damaged or another "
                   "format)"),
])
def test_an_unreadable_file_is_one_error_naming_the_argument_and_the_cause(tmp_path, content, cause):
    path = tmp_path / "w.pt"
    if content == "half":
        torch.save({"w": torch.zeros(100)}, path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        load_tensors(path, name="--weights")
    assert str(error.value) == "--weights: " + cause.format(path)


def test_save_figure_writes_the_file_atomically_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from panning.io import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "line.png", dpi=50)
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["line.png"]  # no temporary file left
    assert not plt.fignum_exists(fig.number)
