"""Collects every round trip and snapshot check from test reports; writes ``--ckpt-report`` and the summary.

Records travel in ``report.user_properties``, so this works the same on the
pytest-xdist controller as in a serial run. Causes are read as data: the notes each
check recorded, else the failure's own first line (``reprcrash``), never scraped text.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from . import options as o


class CheckCollector:
    """A pytest plugin object: one entry per round trip / snapshot check, plus used snapshot paths."""

    def __init__(self, *, report_path: str | None, update: bool, snapshot_dir: str, workers: int) -> None:
        self.report_path = Path(report_path) if report_path else None
        self.update = update
        self.snapshot_dir = snapshot_dir
        self.workers = workers
        self.started = time.time()
        self.entries: list[dict] = []
        self.used_snapshots: set[Path] = set()
        #: nodeid -> first cause, for the summary
        self.failures: dict[str, str] = {}
        self.skips: Counter = Counter()

    # -- collecting --------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = report.user_properties
        variation = next((v for k, v in props if k == o.PROP_VARIATION), None)
        roundtrips = [v for k, v in props if k == o.PROP_ROUNDTRIP]
        snapshots = [v for k, v in props if k == o.PROP_SNAPSHOT]
        if report.skipped and variation is not None:
            reason = _skip_reason(report).removeprefix(f"{o.ID_PREFIX}{variation}: ")
            self.skips[(variation, reason)] += 1
            self._add(report, "roundtrip", variation, "skipped", message=reason)
            return
        if report.when != "call":
            if report.failed and variation is not None:  # setup/teardown failure of a round trip
                self.failures[report.nodeid] = _failure_line(report)
                self._add(report, "roundtrip", variation, "failed", message=_failure_line(report))
            return
        if variation is not None:
            last = roundtrips[-1] if roundtrips else {}
            outcome = "failed" if report.failed else "passed"
            message = (last.get("cause") or _first_cause(last.get("diff"))
                       or (_failure_line(report) if report.failed else ""))
            self._add(report, "roundtrip", variation, outcome, diff=last.get("diff"), message=message,
                      path=last.get("path"))
            if report.failed:
                self.failures[report.nodeid] = f"[{variation}] {message}"
        for snap in snapshots:
            self.used_snapshots.add(Path(snap["path"]))
            outcome = {"match": "passed", "written": "written"}.get(snap["outcome"], "failed")
            message = _first_cause(snap.get("diff")) or snap.get("message", "").split("\n")[0]
            self._add(report, "snapshot", None, outcome, diff=snap.get("diff"), message=message,
                      path=snap["path"], duration=snap.get("duration"))
            if outcome == "failed":
                self.failures.setdefault(report.nodeid, f"[snapshot] {message}")
        if report.failed and not (variation or snapshots):
            audit = next((v for k, v in props if k == o.PROP_AUDIT), None)
            if audit:
                self.failures[report.nodeid] = f"[audit] {audit}"

    def _add(self, report, kind, variation, outcome, *, diff=None, message="", path=None, duration=None):
        from ..report.run import record

        entry = record(kind, variation=variation, outcome=outcome,
                       duration=report.duration if duration is None else duration,
                       diff=diff, message=message, path=path)
        entry["test"] = report.nodeid
        self.entries.append(entry)

    # -- output ----------------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.report_path is None:
            return
        from ..report.run import document, write

        write(self.report_path, document(self.entries, started=self.started, workers=self.workers))

    def stale_snapshots(self) -> list[Path]:
        from .snapshot import stale_snapshots

        stale: list[Path] = []
        for directory in sorted({p.parent for p in self.used_snapshots}):
            stale.extend(stale_snapshots(directory, {p.resolve() for p in self.used_snapshots}))
        return stale

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        stale = self.stale_snapshots() if self.update else []
        if not (self.failures or self.skips or stale):
            return
        tr.section("pytest-ckpt")
        outcomes = Counter(e["outcome"] for e in self.entries if e["kind"] == "roundtrip")
        if outcomes:
            tr.line(f"{sum(outcomes.values())} round trips: {outcomes['passed']} passed, "
                    f"{outcomes['failed']} failed, {outcomes['skipped']} skipped")
        for nodeid, cause in sorted(self.failures.items()):
            tr.line(f"FAILED {nodeid}: {cause}")
        for (variation, reason), n in sorted(self.skips.items()):
            tr.line(f"skipped {n} x {variation}: {reason}")
        if stale:
            tr.line(f"{len(stale)} snapshot file(s) no test of this run used "
                    "(delete them if their tests are gone):")
            for path in stale:
                tr.line(f"  {path}")
        if self.report_path is not None:
            tr.line(f"report written to {self.report_path}")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _failure_line(report) -> str:
    """The first line of a failure's own message (pytest's ``reprcrash``), else of its text."""
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = getattr(crash, "message", None) or getattr(report, "longreprtext", "") or ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:300]


def _first_cause(diff: dict | None) -> str:
    if not diff:
        return ""
    for note in diff.get("notes", []):
        if not note.get("info"):
            return f"[{note['kind']}] {note['text']}"[:300]
    return ""
