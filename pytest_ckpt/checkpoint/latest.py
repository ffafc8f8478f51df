"""The newest complete checkpoint of a directory: what a resume falls back to after a killed save.

Newest is by the last number in the name (``step-200`` after ``step-100``, ``checkpoint-9`` before
``checkpoint-10``) when every candidate has one, else by modification time. Complete is what
``verify`` accepts: a whole file, every shard an index names, a DCP directory with its ``.metadata``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError
from ..formats import verify
from ..formats.registry import CHECKPOINT_SUFFIXES

_NUMBER = re.compile(r"\d+")


@dataclass
class LatestComplete:
    """``path``: the newest complete checkpoint (``None`` when there is none); ``skipped``: the
    newer candidates passed over, newest first, each with why (``verify``'s error)."""

    directory: Path
    path: Path | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        head = (f"{self.path}: the newest complete checkpoint in {self.directory}" if self.path
                else f"{self.directory}: no complete checkpoint")
        return "\n".join([head] + [f"  skipped {p.name}: {why}" for p, why in self.skipped])

    def to_dict(self) -> dict:
        return {"directory": str(self.directory), "path": str(self.path) if self.path else None,
                "skipped": [{"path": str(p), "why": why} for p, why in self.skipped]}


def candidates(directory: Path, pattern: str | None) -> list[Path]:
    """The entries of ``directory`` that may be checkpoints, newest first.

    Without ``pattern``: every directory and every file with a checkpoint suffix, hidden names
    (temporary files of an atomic save) left out; with it, the names that match it.
    """
    try:
        names = os.listdir(directory)
    except OSError as e:
        kind = "not-found" if isinstance(e, FileNotFoundError) else "unreadable"
        raise CheckpointError(directory, kind, e.strerror or str(e)) from None
    if pattern is not None:
        found = [directory / n for n in names if fnmatch.fnmatch(n, pattern)]
    else:
        found = [directory / n for n in names if not n.startswith(".")
                 and ((directory / n).is_dir() or n.endswith(CHECKPOINT_SUFFIXES))]
    return sorted(found, key=_age_key(found), reverse=True)


def _age_key(paths: list[Path]):
    numbers = {p: _NUMBER.findall(p.name) for p in paths}
    if paths and all(numbers.values()):
        return lambda p: (int(numbers[p][-1]), _mtime(p), p.name)
    return lambda p: (_mtime(p), p.name)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def latest_complete(directory: str | os.PathLike, pattern: str | None = None) -> LatestComplete:
    """The newest entry of ``directory`` that ``verify`` accepts, with the newer ones it skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(directory, "not-found" if not directory.exists() else "unreadable",
                              "latest_complete needs the directory that holds the checkpoints")
    skipped: list[tuple[Path, str]] = []
    for path in candidates(directory, pattern):
        try:
            verify(path)
        except CheckpointError as exc:
            skipped.append((path, f"{exc.kind}: {exc.cause}"))
            continue
        return LatestComplete(directory, path, skipped)
    return LatestComplete(directory, None, skipped)
