"""What every resume variation shares: the job it is given, and the default flow.

A variation's ``check(job)`` runs :func:`pytest_ckpt.check_resume` on the project's functions in
its setting and returns the report; by default that is ``check_resume`` with the variation's
:meth:`ResumeSide.hooks` (``wrap=``, ``fresh_process=``). It raises what ``check_resume`` raises,
and ``ResumeUnavailable`` (or ``VariationUnavailable``) when it cannot run here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...resume.check import check_resume
from ...resume.report import ResumeReport
from ...processes.timeouts import DEFAULT_FSDP_TIMEOUT


@dataclass
class ResumeJob:
    """The project's four functions, ``ckpt.resume``'s arguments, and the session's settings."""

    variation: str
    start: Callable
    step: Callable
    save: Callable
    load: Callable
    steps: int = 6
    at: int | tuple[int, ...] | None = None
    config: Any = None
    atol: float = 0.0
    rtol: float = 0.0
    #: where the checkpoints (and a child's or the ranks' files) go; kept for a look after a failure
    workdir: Path = Path(".")
    compile_backend: str = "eager"
    #: opens (or reuses) the single-process gloo group; called by the ddp variation
    process_group: Callable[[], None] = lambda: None
    #: seconds the fsdp variation's ranks may take (ini ckpt_fsdp_timeout)
    fsdp_timeout: float = DEFAULT_FSDP_TIMEOUT
    #: the caller's other keywords of ``check_resume`` (``reproducible``, ``timeout``, ...), passed on as given
    options: dict[str, Any] = field(default_factory=dict)

    def arguments(self) -> dict[str, Any]:
        """``check_resume``'s keyword arguments, as the test gave them."""
        return {"save": self.save, "load": self.load, "steps": self.steps, "at": self.at, "config": self.config,
                "atol": self.atol, "rtol": self.rtol, "workdir": self.workdir, **self.options}


class ResumeSide:
    """The default flow: ``check_resume`` with :meth:`hooks`. ``plain`` is this, unchanged."""

    def hooks(self, job: ResumeJob) -> dict[str, Any]:
        """Extra keyword arguments of ``check_resume`` (``wrap``, ``fresh_process``)."""
        return {}

    def check(self, job: ResumeJob) -> ResumeReport:
        __tracebackhide__ = True
        return check_resume(job.start, job.step, **job.arguments(), **self.hooks(job))
