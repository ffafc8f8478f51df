"""Bare pickles (``pickle.dump``, no torch framing): never loaded. ``unsafe`` when they ask for
globals weights-only loading refuses, else ``not-a-checkpoint``. Registered last: any pickle
that another format frames is that format's."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from . import pickle_scan
from .registry import Contents, Format, register
from .torchfile import is_legacy


def refuse(path: Path, **_) -> Contents:
    """Raise ``unsafe`` (naming the globals) or ``not-a-checkpoint``: a bare pickle is not read."""
    try:
        with open(path, "rb") as f:
            pickle_scan.scan(path, f, "the pickle")
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    raise CheckpointError(
        path, "not-a-checkpoint",
        "a bare pickle (pickle.dump), not a torch.save file: it has neither the zip layout nor the legacy magic number",
    )


def _sniff(path: Path, head: bytes) -> bool:
    # a pickle's PROTO opcode; a short file that starts like a legacy torch file is cut short instead
    return (head[:1] == b"\x80" and not path.name.endswith(".safetensors")
            and not (len(head) < 14 and is_legacy(head, partial=True)))


BARE_PICKLE = register(Format("pickle", read=refuse, verify=lambda path: refuse(path), sniff=_sniff))
