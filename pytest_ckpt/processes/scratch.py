"""Temporary directories a run owns, named by its pid (``pytest-ckpt-<kind>-<pid>-XXXXXXXX``): removed
when the run is done with them, and by the next run when it died first (a ``SIGKILL`` runs no
cleanup). Only the directories of a dead owner go, and only this user's: never another live run's.

>>> owner("pytest-ckpt-ranks-4242-abc_xy12"), owner("pytest-ckpt-ddp+compile-17-a1b2c3d4"), owner("notes")
(4242, 17, None)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "pytest-ckpt-"
_OWNED = re.compile(rf"^{re.escape(PREFIX)}.+-(\d+)-[a-z0-9_]{{8}}$")


def owned_dir(kind: str) -> Path:
    """A new temporary directory of this process (the leftovers of dead runs removed first)."""
    sweep()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-"))


def sweep(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the directories in ``root`` (the temporary directory) that runs now dead left; which."""
    removed = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        entries = list(os.scandir(root or tempfile.gettempdir()))
    except OSError:
        return removed
    for entry in entries:
        pid = owner(entry.name)
        if pid is None or pid == os.getpid() or alive(pid):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or (uid is not None and entry.stat().st_uid != uid):
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def owner(name: str) -> int | None:
    """The pid in an owned directory's name, else ``None``."""
    found = _OWNED.match(name)
    return int(found.group(1)) if found else None


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (another user's counts: it cannot be signalled, yet it lives)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) != "Z"


def _state(pid: int) -> str:
    """Linux's one-letter process state (``Z``: dead, not yet reaped); ``""`` where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
