import os

import pytest
import torch


def pytest_configure(config):
    """Run the tests at exactly ``OMP_NUM_THREADS`` torch threads when it is set. torch caps the
    variable at the number of cores (``OMP_NUM_THREADS=4`` gives 2 threads on a 2-core machine), so
    CI's run at 4 threads would otherwise repeat its run at 2."""
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def pytest_report_header(config):
    return f"torch threads: {torch.get_num_threads()}"


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)
