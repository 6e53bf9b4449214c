"""DistributedDataParallel over a sparsified model: two gloo processes on localhost."""
from __future__ import annotations

import datetime
import faulthandler
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from panning.masks import Masks
from panning.nn import global_prune, sparsify

pytestmark = pytest.mark.slow
WORLD = 2
STEPS = 3
DEADLINE_S = 120


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def worker(rank: int, port: int, masks_path: str, out_dir: str) -> None:
    faulthandler.dump_traceback_later(DEADLINE_S - 10, exit=True)  # a hang fails the test with a traceback
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, WORLD, is_master=False, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD)
    try:
        net = sparsify(model(), Masks.load(masks_path), mode="compressed")
        net[2].mode = "masked"  # both paths under DDP (its buffer broadcast rewrites the masks every step)
        ddp = DistributedDataParallel(net)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        g = torch.Generator().manual_seed(100 + rank)  # every rank sees other data
        for _ in range(STEPS):
            opt.zero_grad()
            ddp(torch.randn(5, 8, generator=g)).square().mean().backward()
            opt.step()
        torch.save(net.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def spawn(*args) -> None:
    """Run `worker` on WORLD processes. The rendezvous store lives here on a free localhost port, bound as port 0,
    so no other process can take the port between choosing and binding it."""
    store = dist.TCPStore("127.0.0.1", 0, None, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=60))
    context = mp.spawn(worker, args=(store.port, *args), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"DDP workers did not finish within {DEADLINE_S} s")


def test_ddp_keeps_masked_weights_zero_and_ranks_in_sync(tmp_path):
    masks = global_prune(model(), 0.5)
    masks.save(tmp_path / "masks.safetensors")
    spawn(str(tmp_path / "masks.safetensors"), str(tmp_path))
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    start = model().state_dict()
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    for name, mask in masks.items():
        weight = states[0][name]
        assert not weight[~mask].any(), name
        assert not torch.equal(weight[mask], start[name][mask]), f"{name} did not train"
    assert Masks.from_state_dict(states[0]) == masks
