"""Fixtures of every kernel test; this folder is on sys.path, so the test files in its
subfolders import :mod:`kernel_checks` by name."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: threads only add fork/join (and, on a busy machine, stalls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
