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


def alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie is dead)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def record_started(monkeypatch, module) -> list[int]:
    """The pids of the processes ``module.subprocess.Popen`` starts from now on."""
    started: list[int] = []
    real_popen = module.subprocess.Popen

    def popen(*args, **kw):
        proc = real_popen(*args, **kw)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(module.subprocess, "Popen", popen)
    return started
