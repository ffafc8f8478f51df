"""The global random streams (python ``random``, numpy, torch CPU, CUDA): read, seed, put back.

numpy is never imported here unless it is installed, and CUDA is touched only when available.
"""

from __future__ import annotations

import random
import sys
from typing import Any, Iterable

import torch

#: the call that saves and the call that restores each stream, for the notes' fixes
SAVE_RESTORE = {
    "python": ("random.getstate()", "random.setstate(...)"),
    "numpy": ("numpy.random.get_state()", "numpy.random.set_state(...)"),
    "torch": ("torch.get_rng_state()", "torch.set_rng_state(...)"),
    "cuda": ("torch.cuda.get_rng_state_all()", "torch.cuda.set_rng_state_all(...)"),
}


def read(name: str) -> Any:
    """The state of one global stream (a fresh object: later draws do not change it).

    >>> read("torch").dtype
    torch.uint8
    """
    if name == "python":
        return random.getstate()
    if name == "numpy":
        return _numpy().random.get_state()
    if name == "torch":
        return torch.get_rng_state()
    if name == "cuda":
        return torch.cuda.get_rng_state_all()
    raise ValueError(f"unknown stream {name!r}")


def write(name: str, state: Any) -> None:
    if name == "python":
        random.setstate(state)
    elif name == "numpy":
        _numpy().random.set_state(state)
    elif name == "torch":
        torch.set_rng_state(state)
    elif name == "cuda":
        torch.cuda.set_rng_state_all(state)


def seed(names: Iterable[str], value: int) -> None:
    """Seed every stream in ``names`` with ``value`` (what a training script's ``seed_everything`` does)."""
    for name in names:
        if name == "python":
            random.seed(value)
        elif name == "numpy":
            _numpy().random.seed(value % 2**32)
        elif name == "torch":
            torch.default_generator.manual_seed(value)  # torch.manual_seed also walks every device: 1 ms
        elif name == "cuda":
            torch.cuda.manual_seed_all(value)


def save(names: Iterable[str]) -> dict[str, Any]:
    return {name: read(name) for name in names}


def restore(states: dict[str, Any]) -> None:
    for name, state in states.items():
        write(name, state)


def _numpy():
    np = sys.modules.get("numpy")
    if np is None:
        import numpy as np  # only reached when installed: available_streams() checked
    return np
