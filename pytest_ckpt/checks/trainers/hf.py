"""``pc.check_resume_hf``: a ``transformers.Trainer`` that stops after step ``at`` and resumes from its
own ``checkpoint-<at>`` trains as the Trainer that never stopped.

transformers is imported when the check runs, never when pytest_ckpt is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from ...resume.report import ResumeReport
from .check import frozen_heap, kept_streams, require, run_check, validate_at
from .stepped import Session

#: how the check's messages name the four calls it makes
NAMES = {"start": "make_trainer", "step": "transformers:Trainer.train",
         "save": "transformers:Trainer._save_checkpoint", "load": "transformers:Trainer.train(resume_from_checkpoint)"}


def check_resume_hf(make_trainer: Callable[[str], Any], *, at: int | tuple[int, ...], atol: float = 0.0,
                    rtol: float = 0.0) -> ResumeReport:
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

    >>> report = pc.check_resume_hf(make_trainer, at=3)      # doctest: +SKIP
    >>> print(report)                                        # doctest: +SKIP
    ok: resume after step 3 matches the uninterrupted run (6 steps, losses bitwise, 11 components compared)
    """
    __tracebackhide__ = True
    transformers = require("transformers", "check_resume_hf")
    if not callable(make_trainer):
        raise TypeError(f"make_trainer={make_trainer!r} is not callable: check_resume_hf needs a function "
                        f"make_trainer(output_dir) that returns a fresh transformers.Trainer")
    from . import hf_fixes
    from .hf_session import HFSession

    def build(root: Path) -> Session:
        return HFSession(_trainer(make_trainer, root, transformers), points)

    with kept_streams(), frozen_heap(), tempfile.TemporaryDirectory(prefix="pytest-ckpt-hf-") as tmp:
        probe = _max_steps(_trainer(make_trainer, Path(tmp) / "probe", transformers))
        steps, facts = probe.args.max_steps, hf_fixes.facts(probe)
        del probe  # its model: the check builds its own
        points = validate_at(at, steps, "max_steps", "check_resume_hf")
        return run_check(build, Path(tmp), steps=steps, at=at, atol=atol, rtol=rtol, names=NAMES,
                         explain=lambda report, saved: hf_fixes.explain(report, saved, facts))


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
