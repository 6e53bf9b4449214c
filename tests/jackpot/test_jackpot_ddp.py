"""The search under DistributedDataParallel (2 gloo processes) finds the same masks as one process.

Equivalent torchrun launch of the command line (gloo on CPU):
    torchrun --nproc_per_node=2 --no-python panning jackpot --data mnist1d --model cnn1d --weights dense.pt
"""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from panning import data as datasets
from panning.jackpot import search

pytestmark = pytest.mark.slow
SETTINGS = dict(sparsity=0.8, epochs=2, batch_size=32, restriction="short", monitor=True, progress=False, seed=3)


def model() -> nn.Module:
    # float64 so that summing the gradient in two halves cannot reorder nearly tied scores; no BatchNorm,
    # whose per-rank batch statistics would differ from the single-process ones (as in any DDP run).
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 12),
                         nn.ReLU(), nn.Linear(12, 4)).double()


def dataset() -> TensorDataset:
    x, y = datasets.load("synthetic", input_shape=(1, 16), n_train=128, n_test=8, noise=2.0).train.tensors
    return TensorDataset(x.double(), y)  # 128 samples: 4 global batches of 32, 16 per rank


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # forked: keep clear of the parent's OpenMP pool
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        result = search(model(), dataset(), **SETTINGS)
        torch.save({"masks": dict(result.masks), "scores": result.scores,
                    "counters": result.counters()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_find_the_single_process_masks(tmp_path):
    # fork, not spawn: the children reuse the imported torch instead of importing it again (seconds each).
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    single = search(model(), dataset(), **SETTINGS)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert single.counters()["admitted"] > 0, "the search never changed the mask"
    for state in ranks:
        assert state["masks"].keys() == set(single.masks)
        for name, mask in single.masks.items():
            assert torch.equal(state["masks"][name], mask), name
        for name, scores in single.scores.items():
            assert torch.allclose(state["scores"][name], scores, rtol=0, atol=1e-12), name
        assert state["counters"] == single.counters()
