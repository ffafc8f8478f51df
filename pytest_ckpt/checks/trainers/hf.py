"""``pc.check_resume_hf``: a ``transformers.Trainer`` that stops after step ``at`` and resumes from its
own ``checkpoint-<at>`` trains as the Trainer that never stopped.

transformers is imported when the check runs, never when pytest_ckpt is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ...resume.check import FRESH_PROCESS_TIMEOUT
from ...resume.report import ResumeReport
from ..scope import check_scope
from .check import fresh_spec, frozen_heap, kept_streams, require, run_check, validate_at, variation_runs
from .stepped import Session

#: how the check's messages name the four calls it makes
NAMES = {"start": "make_trainer", "step": "transformers:Trainer.train",
         "save": "transformers:Trainer._save_checkpoint", "load": "transformers:Trainer.train(resume_from_checkpoint)"}
#: the resume variations the Trainer runs itself, and how
ELSEWHERE = {
    "compile": "the Trainer compiles the model itself: TrainingArguments(torch_compile=True) in make_trainer, and "
               "plain checks the compiled run",
    "ddp": "the Trainer wraps the model in DistributedDataParallel itself when launched on several processes "
           "(torchrun, accelerate launch); this check runs one Trainer in this process",
    "fsdp": "the Trainer shards the model itself (TrainingArguments(fsdp=...)) when launched on several processes "
            "(torchrun, accelerate launch); this check runs one Trainer in this process",
}


def check_resume_hf(make_trainer: Callable[[str], Any], *, at: int | tuple[int, ...], atol: float = 0.0,
                    rtol: float = 0.0, variation: str = "plain", workdir: str | Path | None = None,
                    timeout: float = FRESH_PROCESS_TIMEOUT) -> ResumeReport:
    """Check that a ``transformers.Trainer`` resumed from its own ``checkpoint-<at>`` trains as the Trainer
    that never stopped.

    ``make_trainer(output_dir)`` returns a fresh ``Trainer`` (the same model init, arguments and data
    each call; ``TrainingArguments(output_dir=output_dir, max_steps=N)``). The uninterrupted
    ``train()`` runs twice (:class:`~pytest_ckpt.errors.NotReproducible` when they disagree); the
    first also writes ``checkpoint-<at>`` through the Trainer's own save after step ``at`` and goes on.
    Then ``make_trainer(other_dir).train(resume_from_checkpoint=...)`` resumes from it, under another
    global seed before ``make_trainer`` (the Trainer reseeds from ``args.seed``; its checkpoint restores
    the rest). Right before the first resumed step the model, optimizer (by parameter name), scheduler,
    scaler, every RNG stream, ``TrainerState`` counters, ``TrainerControl`` and the callbacks' state
    are compared with the uninterrupted run's before step ``at + 1``; then every later batch and loss,
    and the final state, bitwise (``atol``/``rtol`` when asked). Raises
    :class:`~pytest_ckpt.errors.ResumeMismatch` with the report, each cause with its fix in the
    Trainer's words.

    ``variation="fresh-process"`` resumes in a new Python process (``make_trainer`` must be importable
    by it: a module-level function, or a ``functools.partial`` of one; ``timeout`` seconds at most), so
    nothing this process holds stands in for what ``checkpoint-<at>`` forgot; the other variations of
    ``@pytest.mark.ckpt_resume`` raise :class:`~pytest_ckpt.errors.ResumeUnavailable` saying how the
    Trainer runs them itself. ``workdir``: where the runs write (a temporary directory by default).

    >>> report = pc.check_resume_hf(make_trainer, at=3)      # doctest: +SKIP
    >>> print(report)                                        # doctest: +SKIP
    ok: resume after step 3 matches the uninterrupted run (6 steps, losses bitwise, 11 components compared)
    """
    __tracebackhide__ = True
    transformers = require("transformers", "check_resume_hf")
    if not callable(make_trainer):
        raise TypeError(f"make_trainer={make_trainer!r} is not callable: check_resume_hf needs a function "
                        f"make_trainer(output_dir) that returns a fresh transformers.Trainer")
    fresh = variation_runs(variation, "check_resume_hf", ELSEWHERE)
    from . import hf_fixes

    with kept_streams(), frozen_heap(), check_scope(workdir, "resume-hf") as (tmp, _):
        probe = _max_steps(_trainer(make_trainer, tmp / "probe", transformers))
        steps, facts = probe.args.max_steps, hf_fixes.facts(probe)
        del probe  # its model: the check builds its own
        points = validate_at(at, steps, "max_steps", "check_resume_hf")
        spec = fresh_spec("hf", {"make_trainer": make_trainer}, points, tmp / "runs") if fresh else None
        return run_check(sessions(make_trainer, points=points), tmp, steps=steps, at=at, atol=atol, rtol=rtol,
                         names=NAMES, explain=lambda report, saved: hf_fixes.explain(report, saved, facts),
                         fresh=spec, timeout=timeout)


def sessions(make_trainer: Callable[[str], Any], *, points: tuple[int, ...]) -> Callable[[Path], Session]:
    """``build(root)``: a session of a fresh Trainer writing under ``root``, saving after ``points``."""
    transformers = require("transformers", "check_resume_hf")
    from .hf_session import HFSession

    def build(root: Path) -> Session:
        return HFSession(_trainer(make_trainer, root, transformers), points)

    return build


def _trainer(make_trainer: Callable, output_dir: Path, transformers: Any) -> Any:
    """``make_trainer(output_dir)``, checked: a Trainer that writes to ``output_dir``."""
    trainer = make_trainer(str(output_dir))
    if not isinstance(trainer, transformers.Trainer):
        raise TypeError(f"make_trainer(output_dir) returned {type(trainer).__name__}, not a transformers.Trainer: "
                        f"check_resume_hf needs make_trainer to build and return the Trainer")
    given = Path(trainer.args.output_dir).resolve()
    if given != output_dir.resolve():
        raise ValueError(f"make_trainer(output_dir) built a Trainer with output_dir={trainer.args.output_dir!r}, "
                         f"not the output_dir it was given ({output_dir}): pass it on, "
                         f"TrainingArguments(output_dir=output_dir, ...), so each run writes its own checkpoints")
    return trainer


def _max_steps(trainer: Any) -> Any:
    steps = trainer.args.max_steps
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"make_trainer(output_dir) built a Trainer without max_steps (max_steps={steps!r}): "
                         f"set TrainingArguments(max_steps=N), the number of steps the check trains")
    return trainer
