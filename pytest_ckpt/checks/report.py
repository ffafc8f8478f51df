"""``RoundTripReport``: what one round trip found, as data; ``str()`` is its report, ``to_dict()`` the
entry ``--ckpt-report`` writes for it.

A round trip that fails raises (``CheckpointMismatch``, ``InterruptedMismatch``, or the project's own
load error) with its report attached: :func:`attached` reads it back, so the pytest plugin records a
failure as it records a pass.

>>> report = RoundTripReport("plain", True, text="ckpt-plain round trip (...): ok: 2 tensors match exactly")
>>> report.to_dict()["outcome"], str(report)
('passed', 'ckpt-plain round trip (...): ok: 2 tensors match exactly')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: the attribute a failing round trip's exception carries its report in
ATTR_REPORT = "_pytest_ckpt_roundtrip"


@dataclass
class RoundTripReport:
    """One round trip under one variation; ``ok`` whether it passed, ``str()`` the report."""

    variation: str
    ok: bool
    #: the report's text: a failure's message, or a pass's verdict line
    text: str = ""
    saved_with: str = ""
    loaded_with: str = ""
    #: the checkpoint the save wrote (a file or a directory)
    path: str | None = None
    #: the diff the report shows (``CheckpointDiff``), when one was made
    diff: Any = None
    #: ``[kind] text`` of the first cause, when it failed
    cause: str = ""
    #: the eval-mode outputs that differ (``inputs=``)
    outputs: list[str] = field(default_factory=list)
    #: what a pass has to say (``layers-1``: the load builds from the checkpoint's own config)
    note: str = ""
    #: the reloaded model; for ``layers-1``/``layers+1`` the exception the load refused with
    reloaded: Any = None
    #: ``interrupted``: every kill's outcome (:class:`~.variations.crash_report.InterruptedReport`)
    interrupted: Any = None
    seconds: float = 0.0

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict:
        """The ``--ckpt-report`` entry of this round trip (the plugin adds the test's id); JSON-ready."""
        from ..report.run import as_dict, diff_cause, record

        diff = as_dict(self.diff)
        return record("roundtrip", variation=self.variation, outcome="passed" if self.ok else "failed",
                      duration=self.seconds, diff=diff, message=self.cause or diff_cause(diff), path=self.path,
                      interrupted=as_dict(self.interrupted))


def attach(exc: BaseException, report: RoundTripReport) -> BaseException:
    """``exc``, carrying ``report`` (read back by :func:`attached`)."""
    try:
        setattr(exc, ATTR_REPORT, report)
    except Exception:  # noqa: BLE001 - an exception without a __dict__ carries none
        pass
    return exc


def attached(exc: BaseException) -> RoundTripReport | None:
    """The report a failed round trip's exception carries, or ``None``."""
    found = getattr(exc, ATTR_REPORT, None)
    return found if isinstance(found, RoundTripReport) else None
