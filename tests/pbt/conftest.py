"""The agent and environment tests run torch on one thread: their assertions compare runs bit for bit, and one
thread is also the fast setting for these tiny networks."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
