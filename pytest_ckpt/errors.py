"""How a check ends badly: the input is unusable, the sources differ, or a resume is not the run that
never stopped (or cannot be judged)."""

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
    ``"not-found"``, ``"needs-safe-globals"`` (a torch file that pickled data classes such as
    ``argparse.Namespace``: the message holds the ``add_safe_globals`` line that allows them).

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


class ResumeMismatch(AssertionError):
    """The resumed run is not the run that never stopped. ``str(err)`` is the report; ``err.report`` the
    :class:`~pytest_ckpt.resume.report.ResumeReport`."""

    def __init__(self, report) -> None:
        self.report = report
        super().__init__(str(report))

    def __reduce__(self):  # keep the report when pickled (multiprocessing, xdist)
        return (ResumeMismatch, (self.report,))


class NotReproducible(Exception):
    """The uninterrupted run disagrees with itself, so no resume can be judged against it.

    ``step`` is the first step (from 1; 0: right after ``start``) where two runs from the same
    seed differ, ``component`` the piece of state (or ``"loss"``, ``"batch"``) that differs there.
    """

    def __init__(self, step: int, component: str, detail: str = "") -> None:
        self.step = step
        self.component = component
        self.detail = detail
        where = "right after start" if step == 0 else f"at step {step}"
        text = (f"the uninterrupted run is not reproducible: two runs from the same seed differ {where}"
                f" in {component}")
        super().__init__(f"{text}: {detail}" if detail else text)

    def __reduce__(self):
        return (NotReproducible, (self.step, self.component, self.detail))


class ResumeError(RuntimeError):
    """The project's own training function failed during a resume check.

    The message names the function (``module.qualname``), the call and the step; the project's
    exception is the ``__cause__``, so its own traceback is shown above.
    """


class ResumeUnavailable(Exception):
    """This way of running the resume check cannot run here (e.g. the functions cannot be imported by a
    fresh process); the pytest plugin skips with ``str(err)``."""


class VariationUnavailable(Exception):
    """This variation cannot run here (no second process, an unpicklable factory, ...): the pytest
    plugin skips with ``str(err)``, never passes."""


class InterruptedMismatch(AssertionError):
    """A kill left a checkpoint the project's load does not return whole. ``report``: the
    :class:`~pytest_ckpt.checks.variations.crash_report.InterruptedReport`; ``str()`` its text."""

    def __init__(self, report, text: str | None = None) -> None:
        self.report = report
        super().__init__(text if text is not None else str(report))

    def __reduce__(self):  # keep the report when pickled (multiprocessing, xdist)
        return (InterruptedMismatch, (self.report, str(self)))


#: pytest-ckpt's own package directory, with a trailing separator: its frames are never the project's
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: set on a project's exception that a check re-raises: the pytest plugin hides torch's frames in it
TRIM_ATTR = "_pytest_ckpt_trim"
