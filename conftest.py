"""Test-suite settings shared by every test directory."""

import os

# Two cores, two xdist workers: one intra-op thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
