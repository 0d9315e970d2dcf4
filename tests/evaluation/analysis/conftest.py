import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny SVDs and models: on a busy 2-core machine thread hand-offs cost more than the work
    (~0.7 s per tiny SVD instead of 1 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
