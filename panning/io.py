"""Small helpers shared by the long-running loops: crash-safe checkpoint files and derived random streams."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def save_atomically(obj: dict, path: Path) -> None:
    """torch.save to a temporary file beside `path`, flush it to disk, then rename over `path`: a crash
    leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def derived_generator(*seed: int) -> torch.Generator:
    """A CPU generator that depends only on the given integers (e.g. seed, epoch): a resumed run redraws
    exactly what an uninterrupted one drew."""
    state = np.random.SeedSequence(list(seed)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
