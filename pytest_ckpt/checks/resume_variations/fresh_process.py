"""``fresh-process``: the resumed half (``start``, ``load``, the remaining steps) runs in a new Python process.

Nothing this process holds (a module-level cache, a global the save filled, an object ``load``
finds still alive) can stand in for what the checkpoint forgot. ``start``, ``step``, ``save`` and
``load`` must be importable module-level functions and ``config`` picklable; otherwise
``check_resume`` raises ``ResumeUnavailable`` before anything runs and the test is skipped with why.
"""

from __future__ import annotations

from typing import Any

from .base import ResumeJob, ResumeSide


class FreshProcess(ResumeSide):
    def hooks(self, job: ResumeJob) -> dict[str, Any]:
        return {"fresh_process": True}


FRESH_PROCESS = FreshProcess()
