"""A check's progress on the terminal, while its test runs (a resume under ``fresh-process`` or
``compile`` takes a minute on one dot): ``pytest-ckpt: resume-compile: second uninterrupted run (12 s)``.

Written as pytest's live logging writes: capture suspended for the line, on a line of its own.
Nothing under an xdist worker (its terminal is not the person's: the controller prints reports
only), on a torchrun rank other than 0, at ``-qq``, or with the terminal reporter off.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import pytest

from ..processes import world


def terminal_line(config: pytest.Config) -> Callable[[str], None] | None:
    """``say(line)``: ``line`` on the terminal, prefixed ``pytest-ckpt: ``; ``None`` where no one sees it."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if (reporter is None or hasattr(config, "workerinput") or config.get_verbosity() < -1
            or (world.launched() and world.rank() != 0)):
        return None
    capture = config.pluginmanager.get_plugin("capturemanager")

    def say(line: str) -> None:
        suspended = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
        with suspended:
            # a line of its own: write_line ends a "test_x.py .." line, this a row of -q dots
            if reporter._tw.width_of_current_line and not reporter.currentfspath:
                reporter._tw.line()
            reporter.write_line(f"pytest-ckpt: {line}")

    return say
