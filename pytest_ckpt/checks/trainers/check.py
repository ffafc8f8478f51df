"""What the trainer checks share: the framework's import, the resume points, and the run of
``pc.check_resume`` over a framework's sessions, its report put in the framework's words."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from ...checkpoint.notes import Note
from ...errors import ResumeMismatch, ResumeUnavailable
from ...processes.children import NotImportable, NotPicklable, importable, pickled
from ...resume import streams as global_streams
from ...resume.check import FRESH_PROCESS_TIMEOUT, check_resume
from ...resume.child import FreshProcess
from ...resume.compare import ledger
from ...resume.report import ResumePoint, ResumeReport
from ...resume.state import KINDS, available_streams
from ..resume_variations import RESUME_VARIATIONS
from ..variations import UnknownVariation
from .stepped import Session, Stepper

#: the resume variations a trainer check runs: the framework's own run, here and resumed in a new process
RUNS = ("plain", "fresh-process")
#: the module in the fresh process that builds the check's functions around the project's
FRESH_BUILDER = ("pytest_ckpt.checks.trainers.fresh", "functions")

#: a rewording rule: (point, note) -> the fix in the framework's words (None: keep the note's), and the
#: note's rank among the point's notes (0 first: the root; the order is kept within a rank)
Reword = Callable[[ResumePoint, Note], tuple[str | None, int]]


def require(module: str, check: str) -> Any:
    """The framework's package, or one line saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModuleNotFoundError(f"{check} needs {module}, which is not installed here: "
                                  f"pip install pytest-ckpt[{module}]", name=module) from exc


def validate_at(at: Any, steps: int, field: str, check: str) -> tuple[int, ...]:
    """The resume points, each a step after which the run saves and from which it resumes."""
    values = at if isinstance(at, tuple) and at else (at,)
    for a in values:
        if not isinstance(a, int) or isinstance(a, bool) or not 1 <= a < steps:
            raise ValueError(f"at={at!r}: {check} resumes after a step from 1 to {steps - 1} "
                             f"(the trainer's {field} is {steps}: a checkpoint after step {steps} has nothing "
                             f"left to resume)")
    return tuple(sorted(set(values)))


@contextlib.contextmanager
def kept_streams() -> Iterator[None]:
    """The caller's global random states, put back afterwards (a trainer reseeds them when built)."""
    saved = global_streams.save(available_streams())
    try:
        yield
    finally:
        global_streams.restore(saved)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects alive before the check are left out of the collections the frameworks ask for.

    ``Trainer.train()`` calls ``gc.collect()`` (accelerate's ``free_memory``) at its start, which walks
    every object of the process: in a test process that holds torch and transformers, most of a tiny
    model's train(). ``gc.freeze()`` sets the objects alive now aside for the check's three runs;
    ``gc.unfreeze()`` gives them back to the collector afterwards, so nothing is kept longer than a
    collection later. Left alone when the caller froze objects itself.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def variation_runs(variation: Any, check: str, elsewhere: dict[str, str]) -> bool:
    """Whether ``variation`` resumes in a fresh process; ``ResumeUnavailable`` (the test is skipped with
    it) for a variation the framework runs itself (``elsewhere``: variation -> how, in its words)."""
    if variation not in RESUME_VARIATIONS:
        raise UnknownVariation(f"{check}: unknown variation {variation!r}; valid: {', '.join(RESUME_VARIATIONS)}")
    if variation in RUNS:
        return variation == "fresh-process"
    how = elsewhere.get(variation) or elsewhere[variation.split("-")[0]]
    raise ResumeUnavailable(f"{check} runs under {' and '.join(RUNS)} only: {how}")


def fresh_spec(framework: str, makers: dict[str, Callable], points: tuple[int, ...], roots: Path) -> bytes:
    """What the fresh process needs to build the same sessions, pickled; ``ResumeUnavailable`` naming the
    function another process cannot have (a lambda, a closure)."""
    for role, fn in makers.items():
        try:
            pickled(fn, role)
        except NotPicklable as exc:
            try:
                importable(fn, role)
            except NotImportable as named:
                exc = named
            raise ResumeUnavailable(f"cannot run in a fresh process: {exc}") from None
    return pickled({"framework": framework, "makers": tuple(makers.values()), "points": points,
                    "roots": str(roots)}, "the trainer check's settings")


def run_check(build: Callable[[Path], Session], workdir: Path, *, steps: int, at: Any, atol: float, rtol: float,
              names: dict[str, str], explain: Callable[[ResumeReport, dict[int, Path]], None],
              fresh: bytes | None = None, timeout: float = FRESH_PROCESS_TIMEOUT) -> ResumeReport:
    """``pc.check_resume`` over sessions that ``build(root)`` makes; ``explain(report, saved)`` puts its
    causes in the framework's words (``saved``: step -> the checkpoint the framework wrote after it).
    ``fresh``: :func:`fresh_spec`'s, to resume in a new Python process (killed after ``timeout`` s)."""
    __tracebackhide__ = True
    stepper = Stepper(build, workdir / "runs", names)
    job = FreshProcess.rebuilt(FRESH_BUILDER, fresh, timeout) if fresh is not None else False
    try:
        report = check_resume(stepper.start, stepper.step, save=stepper.save, load=stepper.load, steps=steps,
                              at=at, atol=atol, rtol=rtol, workdir=workdir / "check", fresh_process=job)
    except ResumeMismatch as err:
        report = err.report
    finally:
        stepper.close()
    stepper.collect()  # the batches a fresh process's resumed runs trained on
    unread_streams(report, stepper)
    explain(report, stepper.saved)
    # the trainer's own state first: a run's optimizer exists only once its training call has begun
    report.compared = dict(sorted(report.compared.items(), key=lambda item: KINDS.index(item[1])))
    if not report.ok:
        raise ResumeMismatch(report)
    return report


def unread_streams(report: ResumeReport, stepper: Stepper) -> None:
    """A global stream that differs after load, that no step's computation draws from and that no batch
    shows (the data is not in another order), is not a cause: only the loop drew from it between steps (a
    DataLoader iterator draws its workers' seed from torch's at each epoch's start). It goes to
    ``not_compared`` with that reason. A stream that is all that explains a later loss stays a cause."""
    for point in report.points:
        resumed = stepper.resumed_batches.get(point.at)
        if point.ok or resumed is None:
            continue
        entries = ledger(stepper.batches, stepper.batches[:point.at] + resumed, point.at)
        # another order, not another position: the first other batch was never seen, or it comes later
        if entries and (entries[0].how == "unseen" or entries[0].step > point.at + 1):
            continue
        unread = [n for n in point.notes if is_stream(n) and n.names[0] not in stepper.drawn]
        rest = [n for n in point.notes if n not in unread]
        divergence = point.divergence or {}
        state_only = divergence.get("what") not in ("loss", "batch")
        if not unread or (not rest and not state_only):
            continue
        gone = {n.names[0] for n in unread}
        point.notes = rest
        point.differs_after_load = [p for p in point.differs_after_load if p not in gone]
        if state_only and divergence.get("what") in gone:
            point.divergence = ({"step": point.at + 1, "what": point.differs_after_load[0], "expected": None,
                                 "actual": None} if rest and point.differs_after_load else None)
        for stream in gone:
            report.compared.pop(stream, None)
            report.not_compared[stream] = (f"it differs after the resume from step {point.at}, but no step's "
                                           f"computation draws from it and no batch shows another order: only "
                                           f"the loop drew from it between steps (a DataLoader's worker seed)")


def reword(report: ResumeReport, rule: Reword) -> None:
    """Each failing point's notes with the fixes ``rule`` gives, in its order (the root first)."""
    for point in report.points:
        if point.ok:
            continue
        ranked = []
        for i, note in enumerate(point.notes):
            fix, rank = rule(point, note)
            ranked.append((rank, i, note if fix is None else dataclasses.replace(note, fix=fix)))
        point.notes = [note for _, _, note in sorted(ranked, key=lambda r: r[:2])]


def is_stream(note: Note) -> bool:
    """A note about one of the global random streams (python, numpy, torch, cuda)."""
    return note.kind == "resume-rng" and len(note.names) == 1 and note.names[0] in global_streams.SAVE_RESTORE


def about(note: Note, path: str) -> bool:
    """Whether ``note`` is about the component at ``path`` or one inside it (``path.x``, ``path[0]``), by
    the path its text starts with or a name it covers.

    >>> about(Note("resume-counter", "run.trainer.callbacks.EMA.updates is 0 after load"), "run.trainer.callbacks.EMA")
    True
    >>> about(Note("resume-counter", "run.trainer.callbacks.EMAv2.updates is 0"), "run.trainer.callbacks.EMA")
    False
    """
    inside = re.compile(re.escape(path) + r"($|[.\[ ])")
    return bool(inside.match(note.text)) or any(inside.match(n) for n in note.names)
