"""``pc.check_resume``: training that stops and resumes is the training that never stopped, in any
setting ``@pytest.mark.ckpt_resume`` knows (``variation=``), from a script as from a test.

>>> report = pc.check_resume(start, step, save=save, load=load, variation="fresh-process")  # doctest: +SKIP
>>> print(report)                                                                       # doctest: +SKIP
ok: resume after step 3 matches the uninterrupted run (6 steps, losses bitwise, 9 components compared)

``variation="plain"`` is :func:`pytest_ckpt.resume.check.check_resume` itself; the others run it as
their module in :mod:`.resume_variations` says (wrapped, in a fresh process, on ranks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..processes.timeouts import DEFAULT_FSDP_TIMEOUT
from ..resume.check import check_resume as check_in_process
from ..resume.report import ResumeReport
from .resume_variations import RESUME_VARIATIONS
from .resume_variations.base import ResumeJob
from .scope import check_scope
from .variations import UnknownVariation

#: keywords of the in-process check that set up the run; a variation other than plain sets them itself
_SETUP = ("wrap", "fresh_process")


def check_resume(
    start: Callable,
    step: Callable,
    *,
    save: Callable,
    load: Callable,
    variation: str = "plain",
    steps: int = 6,
    at: int | tuple[int, ...] | None = None,
    config: Any = None,
    atol: float = 0.0,
    rtol: float = 0.0,
    workdir: str | Path | None = None,
    compile_backend: str = "eager",
    fsdp_timeout: float = DEFAULT_FSDP_TIMEOUT,
    process_group: Callable[[], None] | None = None,
    **options: Any,
) -> ResumeReport:
    """Check that training which stops after step ``at`` and resumes is the training that never
    stopped, in the setting ``variation`` names (``plain``, ``compile``, ``ddp``, ``fresh-process``,
    ``fsdp``, ``fsdp-reshard-3``, ``fsdp-reshard-1``: the variations of ``@pytest.mark.ckpt_resume``).

    ``start(config)`` (``start()`` without config) builds a run, ``step(run)`` trains one step and returns
    the loss or ``(loss, batch)``, ``save(run, path)`` writes a checkpoint, ``load(run, path)`` restores
    into a freshly started run and returns the run to continue (or ``None``). Raises
    :class:`~pytest_ckpt.errors.ResumeMismatch` (an ``AssertionError`` whose ``.report`` is the
    :class:`ResumeReport`) when anything differs, :class:`~pytest_ckpt.errors.NotReproducible` when the
    uninterrupted run disagrees with itself, :class:`~pytest_ckpt.errors.ResumeUnavailable` (or
    :class:`~pytest_ckpt.errors.VariationUnavailable`) when the variation cannot run here, saying why.

    ``workdir``: where checkpoints (and a child's or the ranks' files) go, a temporary directory by
    default; ``compile_backend``: ``torch.compile``'s backend under ``compile``; ``fsdp_timeout``: seconds
    the ranks of the fsdp variations may take. ``ddp`` opens a one-process gloo group when none is open
    and closes it before returning (``process_group``: a function that opens or reuses the group
    instead, and keeps it). Other keywords go to the in-process check as they are
    (``reproducible``, ``timeout`` of the fresh process; under ``plain``, the hooks ``wrap=`` and
    ``fresh_process=``: see :func:`pytest_ckpt.resume.check.check_resume`).
    """
    __tracebackhide__ = True
    if variation not in RESUME_VARIATIONS:
        raise UnknownVariation(f"check_resume: unknown variation {variation!r}; valid: {', '.join(RESUME_VARIATIONS)}")
    arguments = {"steps": steps, "at": at, "config": config, "atol": atol, "rtol": rtol}
    if variation == "plain":
        return check_in_process(start, step, save=save, load=load, workdir=workdir, **arguments, **options)
    setup = [k for k in _SETUP if k in options]
    if setup:
        raise TypeError(f"check_resume: variation={variation!r} sets the run up itself; leave out "
                        f"{', '.join(f'{k}=' for k in setup)} (or use variation='plain')")
    with check_scope(workdir, f"resume-{variation}", process_group) as (directory, open_group):
        job = ResumeJob(variation, start, step, save, load, **arguments, workdir=directory,
                        compile_backend=compile_backend, process_group=open_group, fsdp_timeout=fsdp_timeout,
                        options=options)
        return RESUME_VARIATIONS[variation].load().check(job)
