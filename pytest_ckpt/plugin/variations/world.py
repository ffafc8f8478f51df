"""A launched world: pytest itself started by ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``
set), every rank running the same tests in the same order.

The rank variations then run on that world instead of spawning ranks: NCCL when CUDA is present,
gloo otherwise (:func:`backend` says which ran). Object collectives (a shared directory, each rank's
outcome) go through a gloo group, which works under either backend. Torch-free at import: the
plugin asks :func:`launched` at start-up.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

ENV_KEYS = ("WORLD_SIZE", "RANK", "MASTER_ADDR")

_objects: Any = None  # the gloo group for object collectives, once the world is joined


def launched() -> bool:
    """True when this process is one rank of a world of 2 or more started by torchrun."""
    if not all(os.environ.get(k) for k in ENV_KEYS):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def backend() -> str:
    """``nccl`` when CUDA is present, ``gloo`` otherwise."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def device_type() -> str:
    return "cuda" if backend() == "nccl" else "cpu"


def ensure(timeout_s: float = 180.0) -> None:
    """Join the world once per process (``env://``); later calls reuse it."""
    global _objects
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if backend() == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend(), timeout=timedelta(seconds=timeout_s))
    if _objects is None:
        _objects = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD


def gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (every rank must call this at the same point)."""
    import torch.distributed as dist

    ensure()
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_objects)
    return out


def shared(directory: Path) -> Path:
    """Rank 0's ``directory`` on every rank (created), where the ranks write one checkpoint together.
    Needs a file system every rank sees: one node, or a shared mount."""
    chosen = Path(gather(str(directory))[0])
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen
