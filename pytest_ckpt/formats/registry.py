"""One interface for every file kind, and the registry that picks one for a path.

A format is one module that builds a :class:`Format` and registers it; ``formats/__init__``
imports the modules in the order their claims are tried. Every reader returns a
:class:`Contents`, whatever the file kind.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping

from ..errors import CheckpointError
from .paths import regular

__all__ = ["Contents", "Format", "register", "unregister", "formats", "detect", "detect_file", "writer_for"]

#: suffixes of a single-file checkpoint, for a directory that holds exactly one
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: bytes read to recognise a file
HEAD = 16


@dataclass
class Contents:
    """What a checkpoint path holds, whatever its format.

    ``tree``: the loaded object (nested dict/list/tuple, tensor leaves); ``meta``:
    the leaves are meta tensors (no data read); ``stored``: the metadata ``pc.save``
    wrote (schema, config, ties), when present; ``ties_expressible``: the format can
    record storage sharing; ``files``: the files that make it up; ``tie_key``: for
    meta trees, the identity of each tensor's storage in the file (equal keys are
    tied; ``None``: unknown); ``noun``: what reports call it; ``crcs``: see below.
    """

    path: Path
    format: str
    tree: Any
    meta: bool
    stored: dict | None = None
    ties_expressible: bool = False
    files: list[Path] = field(default_factory=list)
    tie_key: Callable[[Any], Hashable | None] | None = None
    noun: str = "checkpoint"
    #: records whose CRC32 the reader of values checks as it compares them (read with
    #: ``defer_crcs=True``): its ``finish()`` must run before anything is said of the values
    crcs: Any = None


@dataclass(frozen=True)
class Format:
    """One file kind: how it is recognised, read, verified and (optionally) written.

    ``read(target, *, meta, weights_only) -> Contents``; ``verify(target)`` raises
    ``CheckpointError`` or returns None. A file format has ``sniff(path, head)``
    (``head``: the first 16 bytes); a directory format has ``find(directory, names)``
    returning the path to read (an index file, or the directory itself) or None.
    ``cut_short(head)`` says a file too short to sniff begins like this format.
    A writable format has ``write(tensors, tmp, stored, ties)`` and the
    ``suffixes`` it is written for (none: the default writer).
    """

    name: str
    read: Callable[..., Contents]
    verify: Callable[[Path], None]
    sniff: Callable[[Path, bytes], bool] | None = None
    find: Callable[[Path, list[str]], Path | None] | None = None
    cut_short: Callable[[bytes], bool] | None = None
    write: Callable[[Mapping[str, Any], Path, dict, list[tuple[str, ...]]], None] | None = None
    suffixes: tuple[str, ...] = ()
    #: ``read`` takes ``defer_crcs=True``: its CRCs may be checked as the values are compared
    defers_crcs: bool = False


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to the registry; claims are tried in registration order."""
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> Format | None:
    """Remove a format (a project's own, or one replaced for a test); returns it."""
    return _FORMATS.pop(name, None)


def formats() -> Mapping[str, Format]:
    """The registered formats by name, in the order their claims are tried."""
    return dict(_FORMATS)


def detect(path: str | os.PathLike) -> tuple[Format, Path]:
    """``(format, target)``: the format of ``path`` and what to read (a file, an index, a folder).

    Raises ``CheckpointError`` (``not-found``, ``unreadable``, ``truncated``,
    ``corrupted``, ``not-a-checkpoint``) when no format claims it.
    """
    path = Path(path)
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    if not exists:
        raise _absent(path)
    if is_dir:
        return _detect_dir(path)
    return detect_file(path), path


def _absent(path: Path) -> CheckpointError:
    """Nothing to read at ``path``: no entry at all, a symlink loop, or a link to nothing."""
    if not path.is_symlink():
        return CheckpointError(path, "not-found", "no such file or directory")
    try:
        os.stat(path)
    except FileNotFoundError:
        return CheckpointError(path, "not-found", f"a symlink to {os.readlink(path)}, which does not exist")
    except OSError:  # ELOOP
        return CheckpointError(path, "unreadable", "a symlink loop: it names itself, directly or through "
                                                   "other links, and never reaches a file")
    return CheckpointError(path, "not-found", "no such file or directory")


def _detect_dir(path: Path) -> tuple[Format, Path]:
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    for fmt in _FORMATS.values():
        target = fmt.find(path, names) if fmt.find is not None else None
        if target is not None:
            return fmt, target
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


def detect_file(path: Path, *, stat_checked: bool = False) -> Format:
    """The format of one file, from its first bytes; the suffix only sharpens the error.
    ``stat_checked``: the caller has just found it a regular file."""
    if not stat_checked:
        regular(path)  # a FIFO or a device would block or never end: said, not opened
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEAD)
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    if size == 0:
        raise CheckpointError(path, "truncated", "the file is empty (0 bytes; an interrupted save?)")
    for fmt in _FORMATS.values():
        if fmt.sniff is not None and fmt.sniff(path, head):
            return fmt
    raise _unclaimed(path, head, size)


def _unclaimed(path: Path, head: bytes, size: int) -> CheckpointError:
    # the formats' own first bytes, cut short: say "truncated", not "not a checkpoint"
    if len(head) < 14 and any(fmt.cut_short(head) for fmt in _FORMATS.values() if fmt.cut_short):
        return CheckpointError(path, "truncated", f"the file is only {size} bytes: the start of a torch file, then nothing")
    if path.name.endswith(".safetensors"):
        if size < 9:
            return CheckpointError(path, "truncated", f"the file is {size} bytes: shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head[:8])
        if n > size - 8:
            return CheckpointError(path, "corrupted", f"the header length field says {n} bytes, "
                                                      f"more than the file holds ({size}): not a plausible safetensors header")
        return CheckpointError(
            path, "corrupted",
            f"not a safetensors file: the 8-byte header length ({n}) is not followed by a JSON header",
        )
    return CheckpointError(
        path, "not-a-checkpoint",
        f"not a torch zip (PK\\x03\\x04), legacy torch pickle or safetensors header; it starts with {head[:8]!r}",
    )


def writer_for(path: Path) -> Format:
    """The writable format for ``path``'s suffix; the torch zip format for any other suffix."""
    writable = [f for f in _FORMATS.values() if f.write is not None]
    for fmt in writable:
        if path.name.endswith(fmt.suffixes):
            return fmt
    return next(f for f in writable if not f.suffixes)
