"""The two ways a check ends badly: the input is unusable, or the sources differ."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .report.diff import CheckpointDiff


class CheckpointError(Exception):
    """Unreadable, corrupted, truncated, incomplete or unsafe input.

    The message always names the file at fault (for a sharded directory, the
    shard) and the cause. ``kind`` is one of ``"unreadable"``, ``"truncated"``,
    ``"corrupted"``, ``"incomplete"``, ``"unsafe"``, ``"not-a-checkpoint"``,
    ``"not-found"``.

    >>> raise CheckpointError("model.pt", "truncated", "zip central directory missing")
    Traceback (most recent call last):
    pytest_ckpt.errors.CheckpointError: model.pt: truncated: zip central directory missing
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        kind: str,
        cause: str,
        *,
        globals: Sequence[str] = (),
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.kind = kind
        self.cause = cause
        self.globals = tuple(globals)
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{kind}: {cause}")

    def __reduce__(self):  # keep pickling (xdist, multiprocessing) working
        return (_rebuild_error, (self.path, self.kind, self.cause, self.globals))


def _rebuild_error(path, kind, cause, globals_):
    return CheckpointError(path, kind, cause, globals=globals_)


class CheckpointMismatch(AssertionError):
    """The sources differ. ``str(err)`` is the report; ``err.diff`` the diff."""

    def __init__(self, diff: "CheckpointDiff", report: str | None = None) -> None:
        self.diff = diff
        super().__init__(report if report is not None else str(diff))
