"""Real savers and loaders for the ``interrupted`` variation's tests: module-level, so the child
process that kills them can import them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

import pytest_ckpt as pc


def tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def save_in_place(model: nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path)


def save_safetensors(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def save_steps(model: nn.Module, path: Path) -> None:
    """Each checkpoint in its own file under ``path``: step-1.pt, step-2.pt, ... written in place."""
    path.mkdir(exist_ok=True)
    step = 1 + max((int(m.group(1)) for p in path.iterdir()
                    if (m := re.fullmatch(r"step-(\d+)\.pt", p.name))), default=0)
    torch.save(model.state_dict(), path / f"step-{step}.pt")


def load_latest(path: Path) -> nn.Module:
    """Resume from the newest complete checkpoint under ``path``."""
    model = tiny()
    pc.load_into(model, pc.latest_complete(path).path)
    return model


def load_or_fresh(path: Path) -> nn.Module:
    """A resume that swallows a bad checkpoint and starts again: lost work."""
    model = tiny()
    try:
        model.load_state_dict(torch.load(path, weights_only=True))
    except Exception:  # noqa: BLE001 - the bug under test
        pass
    return model


def save_nothing(model: nn.Module, path: Path) -> None:
    pass


def save_hangs_when_killed(model: nn.Module, path: Path) -> None:
    """Saves, except in a kill child (``kill-K/``), where it hangs after noting its pid in
    ``$CRASH_PIDS`` (with ``posix`` calls, which the boundary tracer does not see)."""
    import posix
    import time

    if not Path(path).parent.name.startswith("kill-"):
        torch.save(model.state_dict(), path)
        return
    fd = posix.open(os.path.join(os.environ["CRASH_PIDS"], str(os.getpid())), posix.O_WRONLY | posix.O_CREAT)
    posix.close(fd)
    time.sleep(600)


class MiniMind(nn.Module):
    """minimind's shape: an embedding tied to the head, numbered blocks, a norm."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(32, 8)
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))
        self.norm = nn.LayerNorm(8)
        self.lm_head = nn.Linear(8, 32, bias=False)
        self.embed_tokens.weight = self.lm_head.weight


def save_half_atomic(model: nn.Module, path: Path) -> None:
    """minimind's save: the weights cast to float16, written to ``.tmp``, then ``os.replace``d over ``path``."""
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save(state, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)

