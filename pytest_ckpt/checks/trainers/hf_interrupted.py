"""``pc.check_interrupted_hf``: a ``transformers.Trainer``'s own checkpoint save killed at every file
boundary, then resumed the way the project resumes.

>>> report = pc.check_interrupted_hf(make_trainer, at=4)                             # doctest: +SKIP
>>> report = pc.check_interrupted_hf(make_trainer, at=4, resume="latest_complete")   # doctest: +SKIP

The kills and the resumes run in a child process (:mod:`.hf_crash`); transformers is imported when the
check runs, never when pytest_ckpt is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ...errors import InterruptedMismatch, VariationUnavailable
from ...processes import ranks
from ...processes.children import NotPicklable, pickled
from ..scope import check_scope
from ..variations.crash_report import InterruptedReport, Outcome
from .check import frozen_heap, kept_streams, require
from .hf import _max_steps, _trainer
from .hf_crash import LAST, LATEST_COMPLETE, HFCrashJob

#: seconds the child may take for the run, every kill and every resume, when the caller gives none
TIMEOUT = 900.0
#: the values of ``resume=``: how the resumed Trainer finds its checkpoint
RESUMES = {True: LAST, LATEST_COMPLETE: LATEST_COMPLETE}
#: the fix of a resume that takes the highest-numbered checkpoint-N, whole or not
ADVICE = ("resume from the newest complete checkpoint, not the highest-numbered one: "
          "trainer.train(resume_from_checkpoint=pc.latest_complete(output_dir).path) instead of "
          "resume_from_checkpoint=True (get_last_checkpoint takes checkpoint-N whole or not)")


def check_interrupted_hf(make_trainer: Callable[[str], Any], *, at: int, resume: bool | str = True,
                         workdir: str | Path | None = None, timeout: float = TIMEOUT) -> InterruptedReport:
    """Kill a ``transformers.Trainer``'s own save of ``checkpoint-<at>`` at every file boundary (before each
    file it creates, with each written file torn: the weights, ``config.json``, ``optimizer.pt``,
    ``scheduler.pt``, ``rng_state.pth``, ``trainer_state.json``, ...) over its complete
    ``checkpoint-<at // 2>``, then resume each kill's ``output_dir`` with a fresh
    ``make_trainer(output_dir)`` and train to ``max_steps``.

    ``resume=True`` resumes as ``train(resume_from_checkpoint=True)`` does (``get_last_checkpoint``: the
    highest-numbered ``checkpoint-N``, whole or not); ``resume="latest_complete"`` from
    ``pc.latest_complete(output_dir).path``. A kill passes when the resumed run's losses and final weights
    are the uninterrupted run's, bitwise (from either checkpoint); it is a hard fail when ``train()`` or the
    next save raises, a silent divergence when the resumed run trains on and differs (the first loss, else
    the final weights, says where), lost work when no checkpoint is left to resume from.

    ``make_trainer(output_dir)`` as in :func:`~pytest_ckpt.check_resume_hf`, picklable (a module-level
    function, or a ``functools.partial`` of one: the Trainer runs in a child process, ``timeout`` seconds
    at most), else :class:`~pytest_ckpt.errors.VariationUnavailable`. Returns the
    :class:`~pytest_ckpt.InterruptedReport`; raises :class:`~pytest_ckpt.errors.InterruptedMismatch`
    (an ``AssertionError`` whose message is the report) when a kill breaks the resume.
    """
    __tracebackhide__ = True
    transformers = require("transformers", "check_interrupted_hf")
    if not callable(make_trainer):
        raise TypeError(f"make_trainer={make_trainer!r} is not callable: check_interrupted_hf needs a function "
                        f"make_trainer(output_dir) that returns a fresh transformers.Trainer")
    if not isinstance(resume, (bool, str)) or resume not in RESUMES:
        raise ValueError(f"resume={resume!r}: check_interrupted_hf resumes as resume_from_checkpoint=True does "
                         f"(resume=True, the default) or from pc.latest_complete(output_dir) "
                         f"(resume='latest_complete')")
    started = time.perf_counter()
    with kept_streams(), frozen_heap(), check_scope(workdir, "interrupted-hf") as (directory, _):
        steps = _max_steps(_trainer(make_trainer, directory / "probe", transformers)).args.max_steps
        if not isinstance(at, int) or isinstance(at, bool) or not 2 <= at < steps:
            raise ValueError(f"at={at!r}: check_interrupted_hf kills the Trainer's save of checkpoint-<at> over its "
                             f"complete checkpoint-<at // 2> and resumes: at from 2 to {steps - 1} (the trainer's "
                             f"max_steps is {steps})")
        try:
            blob = pickled(make_trainer, "make_trainer")
        except NotPicklable as exc:
            raise VariationUnavailable(f"check_interrupted_hf runs the Trainer in a child process: {exc}") from None
        job = HFCrashJob(blob, at, at // 2, RESUMES[resume], jobs=max(1, min(2, os.cpu_count() or 1)))
        crashes = directory / "crashes"
        try:
            ranks.run_ranks("pytest_ckpt.checks.trainers.hf_crash", job, crashes, timeout=timeout, world_size=1,
                            function="_main", label="check_interrupted_hf", fresh=True)
        except RuntimeError as exc:
            error = crashes / "error.txt"
            if error.exists():
                raise RuntimeError(f"check_interrupted_hf: {error.read_text()}") from None
            raise
        report = _report(json.loads((crashes / "result.json").read_text()), job)
    report.seconds = time.perf_counter() - started
    if not report.ok:
        raise InterruptedMismatch(report)
    return report


def _report(result: dict, job: HFCrashJob) -> InterruptedReport:
    """The child's outcomes as the report; the run without a kill must pass first."""
    __tracebackhide__ = True
    saved_with = f"transformers.Trainer._save_checkpoint, checkpoint-{job.at} over checkpoint-{job.earlier}"
    loaded_with = ("Trainer.train(resume_from_checkpoint=True)" if job.resume == LAST
                   else "Trainer.train(resume_from_checkpoint=pc.latest_complete(output_dir).path)")
    report = InterruptedReport(saved_with, loaded_with, [Outcome(**o) for o in result["outcomes"]],
                               tuple(result["files"]), result["not_run"], check="ckpt-interrupted Trainer save",
                               advice=ADVICE if job.resume == LAST else "")
    control = Outcome(**result["control"])
    if control.verdict != "pass":
        raise InterruptedMismatch(report, f"{report.check} (saved with {saved_with}, loaded with {loaded_with}): "
                                          f"with no kill at all, {control.detail}: the Trainer does not resume "
                                          f"exactly from its own complete checkpoint-{job.at}; make "
                                          f"pc.check_resume_hf(make_trainer, at={job.at}) pass first")
    return report
