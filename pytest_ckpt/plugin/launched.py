"""pytest under ``torchrun``: every rank runs the same tests; once a check has joined the world (the
first test of a distributed variation), a ckpt test that fails on any rank fails on every rank, naming
the ranks, and no rank exits before every rank has written its own output (torchrun stops the other
ranks as soon as one exits with a failure, which would cut their output, or rank 0's summary and
report); only rank 0 writes the summary and ``--ckpt-report``. A suite that never joins never waits
for the other ranks (a stale torchrun environment costs it nothing).

Registered by the plugin when :func:`pytest_ckpt.processes.world.launched` is true.
"""

from __future__ import annotations

import sys

import pytest

from ..processes import world


def _first_line(report: pytest.TestReport) -> str:
    text = str(report.longrepr or "")
    lines = [line for line in text.splitlines() if line.startswith("E ")] or text.splitlines() or [""]
    return lines[0].removeprefix("E ").strip()[:500]


class LaunchedWorld:
    """The ranks agree on each ckpt test's outcome (a gloo all-gather after its call phase)."""

    def pytest_report_header(self, config: pytest.Config) -> str:
        return (f"pytest-ckpt: rank {world.rank()} of a launched world of {world.size()} (torchrun); "
                f"ddp, fsdp, reshard and the resume fsdp variations run on it, backend {world.backend()}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        # the ranks agree once a check joined the world: a suite without distributed variations never waits
        if call.when != "call" or "ckpt" not in getattr(item, "fixturenames", ()) or not world.joined():
            return report
        outcomes = world.gather((report.outcome, _first_line(report) if report.failed else ""))
        failed = [r for r, (outcome, _) in enumerate(outcomes) if outcome == "failed"]
        if not failed:
            return report
        ranks = ", ".join(str(r) for r in failed)
        line = (f"pytest-ckpt: failed on rank{'s' if len(failed) > 1 else ''} {ranks} of {len(outcomes)} "
                f"(torchrun, backend {world.backend()})")
        if report.failed:
            report.sections.append(("pytest-ckpt launched world", line))
        else:
            report.outcome = "failed"
            report.longrepr = f"{line}; rank {failed[0]}: {outcomes[failed[0]][1]}"
        return report

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not world.joined():  # no check needed the other ranks: none waits for them
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            world.gather(None)  # every rank has printed its summary (rank 0: and written the report)
        except Exception:  # noqa: BLE001 - a rank that cannot reach the others exits as it would have
            pass
