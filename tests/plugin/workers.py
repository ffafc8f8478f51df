"""Module-level factories the FSDP workers can import (tests of the launcher)."""

import os
import time

from torch import nn


def tiny():
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))


def hangs():
    time.sleep(600)


def crashes_on_rank_1():
    if os.environ.get("RANK_HINT") == "1" or _rank() == 1:
        raise RuntimeError("rank 1 cannot build the model")
    time.sleep(600)  # rank 0 waits, as it would in a collective


def _rank():
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else -1


def torch_save_state_dict(model, path):
    """What a plain save does under FSDP2: each rank torch.saves its own DTensor state dict."""
    from pathlib import Path

    import torch
    import torch.distributed as dist

    Path(path).mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), Path(path) / f"rank{dist.get_rank()}.pt")
