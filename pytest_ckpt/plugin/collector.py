"""Collects every round trip, resume check and snapshot check from test reports; writes ``--ckpt-report``
and the summary.

Records travel in ``report.user_properties``, so this works the same on the
pytest-xdist controller as in a serial run. Causes are read as data: the notes each
check recorded, else the failure's own first line (``reprcrash``), never scraped text.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from . import options as o


class CheckCollector:
    """A pytest plugin object: one entry per round trip / resume check / snapshot check, plus used
    snapshot paths."""

    def __init__(self, *, report_path: str | None, update: bool, snapshot_dir: str, workers: int) -> None:
        self.report_path = Path(report_path) if report_path else None
        self.update = update
        self.snapshot_dir = snapshot_dir
        self.workers = workers
        self.started = time.time()
        self.entries: list[dict] = []
        self.used_snapshots: set[Path] = set()
        #: snapshot files --ckpt-update wrote, in order
        self.written: list[Path] = []
        #: nodeid -> first cause, for the summary
        self.failures: dict[str, str] = {}
        self.skips: Counter = Counter()
        #: (variation, note) of round trips that passed with something to say
        self.notes: Counter = Counter()
        #: test module file -> names of the tests that ran (under --ckpt-update: for snapshots no test used)
        self.ran: dict[str, set[str]] = defaultdict(set)
        #: test module file -> names of the test functions it defines (collected, run or not)
        self.defined: dict[str, set[str]] = defaultdict(set)

    # -- collecting --------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.update and (report.when == "call" or (report.when == "setup" and report.skipped)):
            path, _, name = report.nodeid.partition("::")
            self.ran[path].add(name.rpartition("::")[2])
        props = report.user_properties
        resume = next((v for k, v in props if k == o.PROP_RESUME_VARIATION), None)
        if resume is not None:
            self._resume(report, resume, [v for k, v in props if k == o.PROP_RESUME])
            return
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
            # the entry the round trip's report made (RoundTripReport.to_dict()), with this test's id
            message = last.get("message") or (_failure_line(report) if report.failed else "")
            self._add(report, "roundtrip", variation, outcome, diff=last.get("diff"), message=message,
                      path=last.get("path"), interrupted=last.get("interrupted"))
            if report.failed:
                self.failures[report.nodeid] = f"[{variation}] {message}"
            elif last.get("note"):
                self.notes[(variation, last["note"])] += 1
        for snap in snapshots:
            from ..report.run import diff_cause

            self.used_snapshots.add(Path(snap["path"]))
            outcome = {"match": "passed", "written": "written"}.get(snap["outcome"], "failed")
            if outcome == "written":
                self.written.append(Path(snap["path"]))
            message = diff_cause(snap.get("diff")) or snap.get("message", "").split("\n")[0]
            self._add(report, "snapshot", None, outcome, diff=snap.get("diff"), message=message,
                      path=snap["path"], duration=snap.get("duration"))
            if outcome == "failed":
                self.failures.setdefault(report.nodeid, f"[snapshot] {message}")
        if report.failed and not (variation or snapshots):
            audit = next((v for k, v in props if k == o.PROP_AUDIT), None)
            if audit:
                self.failures[report.nodeid] = f"[audit] {audit}"

    def _resume(self, report: pytest.TestReport, variation: str, checks: list[dict]) -> None:
        """A test under ``ckpt_resume``: its last check, as the fixture recorded it."""
        label = f"{o.RESUME_ID_PREFIX}{variation}"
        last = checks[-1] if checks else {}
        if report.skipped:
            reason = _skip_reason(report).removeprefix(f"{label}: ")
            self.skips[(label, reason)] += 1
            self._add(report, "resume", variation, "skipped", message=reason, resume=last.get("report"))
        elif report.failed:
            message = last.get("cause") or _failure_line(report)
            self.failures[report.nodeid] = message
            self._add(report, "resume", variation, "failed", message=message, resume=last.get("report"))
        elif report.when == "call":
            self._add(report, "resume", variation, "passed", resume=last.get("report"))

    def _add(self, report, kind, variation, outcome, *, diff=None, message="", path=None, duration=None,
             resume=None, interrupted=None):
        from ..report.run import record

        entry = record(kind, variation=variation, outcome=outcome,
                       duration=report.duration if duration is None else duration,
                       diff=diff, message=message, path=path, resume=resume, interrupted=interrupted)
        entry["test"] = report.nodeid
        self.entries.append(entry)

    # -- output ----------------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.report_path is None:
            return
        from ..report.run import document, write

        write(self.report_path, document(self.entries, started=self.started, workers=self.workers))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """pytest-xdist: the test functions a worker's modules define (the workers collect)."""
        output = getattr(node, "workeroutput", None) or {}
        for path, names in output.get(DEFINED_KEY, {}).items():
            self.defined[path].update(names)

    def stale_snapshots(self, rootpath: Path) -> list[Path]:
        """Snapshot files beside the modules of this run that no test used: the files of a
        test that ran and did not ask for them, or of a test that is gone. A test that was
        deselected (``-k``) or not selected keeps its files."""
        from .snapshot import snapshot_path, stale_snapshots

        used = {p.resolve() for p in self.used_snapshots}
        by_dir: dict[Path, tuple[set[str], set[str]]] = {}
        for module in set(self.ran) | set(self.defined):
            directory = snapshot_path(rootpath / module, self.snapshot_dir, "x", None).parent
            ran, defined = by_dir.setdefault(directory.resolve(), (set(), set()))
            ran.update(snapshot_path(Path("m.py"), "d", n, None).stem for n in self.ran.get(module, ()))
            defined.update(self.defined.get(module, ()))
        stale: list[Path] = []
        for directory in sorted({p.parent for p in self.used_snapshots}):
            ran, defined = by_dir.get(directory.resolve(), (set(), set()))
            for path in stale_snapshots(directory, used):
                stem = path.name.removesuffix(".json")
                if any(stem == n or stem.startswith(n + ".") for n in ran):
                    stale.append(path)  # its test ran without asking for it
                elif _BASE.match(stem).group(0) not in defined:
                    stale.append(path)  # no test of that name any more
        return stale

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        stale = self.stale_snapshots(tr.config.rootpath) if self.update else []
        if not (self.failures or self.skips or stale or self.written or self.notes):
            return
        tr.section("pytest-ckpt")
        for kind, noun in (("roundtrip", "round trip"), ("resume", "resume check")):
            outcomes = Counter(e["outcome"] for e in self.entries if e["kind"] == kind)
            if outcomes:
                n = sum(outcomes.values())
                tr.line(f"{n} {noun}{'' if n == 1 else 's'}: {outcomes['passed']} passed, "
                        f"{outcomes['failed']} failed, {outcomes['skipped']} skipped")
        from ..report.run import interrupted_counts

        kills = interrupted_counts(self.entries)
        if kills is not None:
            n = sum(kills["kills"].values())
            tr.line(f"interrupted: {n} kill{'' if n == 1 else 's'} of {kills['checks']} save"
                    f"{'' if kills['checks'] == 1 else 's'}: " + ", ".join(f"{v} {k}" for k, v in kills["kills"].items()))
        for nodeid, cause in sorted(self.failures.items()):
            tr.line(f"FAILED {nodeid}: {cause}")
        for (variation, reason), n in sorted(self.skips.items()):
            tr.line(f"skipped {n} x {variation}: {reason}")
        for (variation, note), n in sorted(self.notes.items()):
            tr.line(f"passed {n} x {variation}: {note}")
        if self.written:
            tr.line(f"wrote {len(self.written)} snapshot file{'' if len(self.written) == 1 else 's'}:")
            for path in self.written:
                tr.line(f"  {_relative(path)}")
        if stale:
            tr.line(f"{len(stale)} snapshot file(s) no test of this run used "
                    "(delete them if their tests are gone):")
            for path in stale:
                tr.line(f"  {path}")
        if self.report_path is not None:
            tr.line(f"report written to {self.report_path}")


#: a worker's ``workeroutput`` key: {test module: names of the test functions it defines}
DEFINED_KEY = "ckpt_defined_tests"
_BASE = re.compile(r"^[^.\[]*")


def defined_tests(items) -> dict[str, list[str]]:
    """Per test module (as a node id spells its path), the names of the test functions and
    methods it defines, whether or not they were selected."""
    out: dict[str, set[str]] = defaultdict(set)
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        path = item.nodeid.partition("::")[0]
        if path in out:
            continue
        for name, obj in vars(module).items():
            out[path].add(name)
            if isinstance(obj, type):
                out[path].update(vars(obj))
    return {k: sorted(v) for k, v in out.items()}


def _relative(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


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
