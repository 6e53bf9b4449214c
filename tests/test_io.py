"""panning.io: the one atomic writer (nothing torn or stray on any failure) and the one safe loader."""
from __future__ import annotations

import pickle
import stat

import pytest
import torch
from safetensors.torch import load_file

from panning.io import atomic_path, load_tensors, save_atomically, save_tensors, write_text


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


def test_writing_into_a_missing_folder_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text(tmp_path / "missing" / "x.txt", "hello")
    assert list(tmp_path.iterdir()) == []


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
