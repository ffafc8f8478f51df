"""Bare pickles (``pickle.dump``, no torch framing): never loaded. ``unsafe`` when they ask for
globals weights-only loading refuses, else ``not-a-checkpoint``. Registered last: any pickle
that another format frames is that format's."""

from __future__ import annotations

import pickletools
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
        "a bare pickle (pickle.dump), not a torch.save file: it has neither the zip layout nor the "
        "legacy magic number; save it with torch.save or pc.save",
    )


#: the opcodes a protocol 0 or 1 pickle (no PROTO opcode) of a container or a call starts with
_OLD_PROTOCOL_STARTS = frozenset(b"(}])cN")
#: a file larger than this is not scanned to find out whether it is an old-protocol pickle
_OLD_PROTOCOL_MAX = 64 << 20


def _sniff(path: Path, head: bytes) -> bool:
    # a pickle's PROTO opcode; a short file that starts like a legacy torch file is cut short instead
    if path.name.endswith(".safetensors") or (len(head) < 14 and is_legacy(head, partial=True)):
        return False
    return head[:1] == b"\x80" or (head[:1] and head[0] in _OLD_PROTOCOL_STARTS and _old_protocol(path))


def _old_protocol(path: Path) -> bool:
    """A protocol 0 or 1 pickle: its opcodes read cleanly to a STOP that ends the file."""
    try:
        if path.stat().st_size > _OLD_PROTOCOL_MAX:
            return False
        data = path.read_bytes()
        end = 0
        for op, _, pos in pickletools.genops(data):
            end = pos + 1
        return end == len(data)
    except Exception:  # not a pickle: any decoding error
        return False


BARE_PICKLE = register(Format("pickle", read=refuse, verify=lambda path: refuse(path), sniff=_sniff))
