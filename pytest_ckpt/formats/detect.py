"""Which kind of checkpoint a path holds, from its first bytes (files) or its layout (directories)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy format opens with a pickled LONG1 of this magic number.
LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
DCP_METADATA = ".metadata"


def detect(path: str | os.PathLike) -> tuple[str, Path]:
    """``(format, target)``: the format name and the file (or index, or DCP folder) to read.

    Formats: ``"torch"``, ``"torch-legacy"``, ``"safetensors"``, ``"hf-sharded"``
    (target: the index file), ``"dcp"`` (target: the folder), ``"pickle"`` (a bare
    pickle, not a torch file). Raises ``CheckpointError`` otherwise.

    >>> detect("model.safetensors")                 # doctest: +SKIP
    ('safetensors', PosixPath('model.safetensors'))
    """
    path = Path(path)
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    if not exists:
        raise CheckpointError(path, "not-found", "no such file or directory")
    if is_dir:
        return _detect_dir(path)
    return detect_file(path), path


def _detect_dir(path: Path) -> tuple[str, Path]:
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    for suffix in INDEX_SUFFIXES:  # safetensors first: HF writes both only in a transition
        index = [n for n in names if n.endswith(suffix)]
        if index:
            return "hf-sharded", path / index[0]
    if DCP_METADATA in names:
        return "dcp", path
    single = [n for n in names if n.endswith(CHECKPOINT_SUFFIXES) and (path / n).is_file()]
    if len(single) == 1:
        return detect_file(path / single[0]), path / single[0]
    found = f"{len(single)} checkpoint files ({', '.join(single[:5])})" if single else "no checkpoint file"
    raise CheckpointError(
        path, "not-a-checkpoint",
        "a directory without *.safetensors.index.json, *.bin.index.json or a DCP .metadata file, "
        f"and {found}; pass the file itself or a directory holding exactly one of "
        + ", ".join(CHECKPOINT_SUFFIXES),
    )


def detect_file(path: Path) -> str:
    """The format of one file, from its first bytes; the suffix only sharpens the error."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    if size == 0:
        raise CheckpointError(path, "truncated", "the file is empty (0 bytes; an interrupted save?)")
    if head.startswith(ZIP_MAGIC):
        return "torch"
    if _is_legacy(head):
        return "torch-legacy"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    if len(head) < 14 and (ZIP_MAGIC.startswith(head[:4]) or _is_legacy(head, partial=True)):
        raise CheckpointError(path, "truncated", f"the file is only {size} bytes: the start of a torch file, then nothing")
    if path.name.endswith(".safetensors"):
        if size < 9:
            raise CheckpointError(path, "truncated", f"the file is {size} bytes: shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head[:8])
        raise CheckpointError(
            path, "corrupted",
            f"not a safetensors file: the 8-byte header length ({n}) is not followed by a JSON header",
        )
    if head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(
        path, "not-a-checkpoint",
        f"not a torch zip (PK\\x03\\x04), legacy torch pickle or safetensors header; it starts with {head[:8]!r}",
    )


def _is_legacy(head: bytes, partial: bool = False) -> bool:
    # b"\x80<proto>\x8a\x0a" + magic: PROTO, then LONG1 with 10 bytes.
    expected = b"\x80?\x8a\x0a" + LEGACY_MAGIC
    n = len(head) if partial else len(expected)
    if len(head) < n or n == 0:
        return False
    return all(e == ord("?") and i == 1 or head[i] == e for i, e in enumerate(expected[:n]))
