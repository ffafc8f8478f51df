"""``CheckpointDiff``: the comparison's data (:class:`~pytest_ckpt.compare.diff.Diff`) with its
report: ``str(diff)`` for a person, ``diff.to_dict()`` for tools."""

from __future__ import annotations

import dataclasses

from ..compare.diff import Diff
from .json import diff_to_dict
from .text import render

__all__ = ["CheckpointDiff"]


class CheckpointDiff(Diff):
    """Differences between *expected* (what the code builds) and *actual* (what is on disk).

    ``.ok``; ``.missing``/``.unexpected`` (sorted canonical names); ``.shape``/``.dtype``
    (name -> ``(expected, actual)``); ``.values`` (name -> max absolute difference);
    ``.ties`` (tie groups of expected that actual breaks); ``.notes`` (one
    :class:`~pytest_ckpt.checkpoint.notes.Note` per cause); ``str()``: the report.

    >>> d = CheckpointDiff(expected="model", actual="ckpt.pt", expected_info={"tensors": 2})
    >>> d.ok, str(d)
    (True, 'ok: 2 tensors match in name, shape and dtype (values not compared)')
    """

    @classmethod
    def of(cls, diff: Diff) -> "CheckpointDiff":
        """The same diff, with its report (fields are shared, not copied)."""
        if isinstance(diff, cls):
            return diff
        return cls(**{f.name: getattr(diff, f.name) for f in dataclasses.fields(diff)})

    def __str__(self) -> str:
        return render(self)

    def report(self, *, verbose: bool = False) -> str:
        """The report; ``verbose=True`` appends every differing name."""
        return render(self, verbose=verbose)

    def to_dict(self) -> dict:
        """JSON-ready: every field, the notes, and the text report."""
        return diff_to_dict(self)
