"""Files a checkpoint names (shards, DCP storage files): inside its directory, and regular files.

A name written inside a checkpoint may not leave the checkpoint's directory: no ``..``, no
absolute path, no drive letter (``unsafe``). Symlinks that sit in the directory are the owner's
doing and are followed: the Hugging Face cache links ``snapshots/<rev>/`` into ``blobs/``.
A FIFO, a device or a directory where a file is expected is said for what it is, never opened.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import CheckpointError

_DRIVE = re.compile(r"^[A-Za-z]:")


def inside(directory: Path, name: object, *, named_by: Path, what: str) -> Path:
    """``directory / name``, or ``unsafe`` naming the entry of ``named_by`` that leaves ``directory``."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CheckpointError(named_by, "corrupted", f"{what} {name!r} is not a file name")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (name.startswith(("/", "\\")) or _DRIVE.match(name) or PureWindowsPath(name).is_absolute()
            or ".." in parts):
        raise CheckpointError(
            named_by, "unsafe",
            f"{what} {name!r} leaves the checkpoint's directory: names inside a checkpoint must stay in "
            "it (no '..', no absolute path); nothing outside was read")
    return directory / name


def kind_of(path: Path) -> str | None:
    """``None`` for a regular file (symlinks followed); else what it is ("a FIFO", "a directory", ...);
    raises ``FileNotFoundError`` when absent."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def regular(path: Path, *, role: str = "the checkpoint") -> None:
    """Raise ``unreadable`` when ``path`` exists but is no regular file (reading a FIFO or
    ``/dev/zero`` would block or never end)."""
    try:
        what = kind_of(path)
    except FileNotFoundError:
        return  # the caller says what an absent file means
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    if what is not None:
        raise CheckpointError(path, "unreadable", f"{role} is {what}, not a regular file: not read")
