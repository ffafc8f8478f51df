"""A framework's own training run as the four functions of ``pc.check_resume``: start, step, save, load.

``check_resume`` calls ``start`` under a fixed seed (another one for the resumed half), ``step`` once
per training step, ``save`` after step ``at`` and ``load`` to resume. Here each run is a
:class:`Session` of the framework: ``start`` builds its trainer, the first ``step`` starts the
framework's own training call in a :class:`~.driven.Driven` thread, each ``step`` lets it train one
optimizer step and stop right before the next one, ``save`` hands over the checkpoint the framework
wrote after that step, and ``load`` starts the framework's own resume from it, stopping right before
the first resumed step: the moment the framework's restore is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import weakref
from pathlib import Path
from typing import Any, Callable

from ...errors import ResumeError
from ...resume import streams as global_streams
from ...resume.capture import fingerprint
from ...resume.state import available_streams
from .driven import Driven


class TrainerRun:
    """The state of a framework's training run as the resume check sees it: ``run.trainer.model``,
    ``run.trainer.optimizer``, ... (each :class:`Session` sets the attributes)."""


class Session:
    """One run of a framework's trainer. Subclasses build it and say how it trains and resumes.

    The framework's callback calls ``self.driver.pause()`` right before the first micro-batch of each
    optimizer step, :meth:`record` for each micro-batch it trains, and :meth:`watch` at the start and
    the end of each step's computation (forward, backward, optimizer step): the global random streams
    that move there are those training reads, as opposed to those the loop draws from between steps.
    """

    #: how the report names the framework's calls ("transformers.Trainer")
    trainer_name = "trainer"

    def __init__(self, name: str) -> None:
        self.driver = Driven(name)
        #: (batch digest, loss) of each micro-batch trained since the last pause
        self.records: list[tuple[str, float]] = []
        #: steps trained by this session's training call
        self.steps = 0
        #: the global random streams some step's computation drew from
        self.drawn: set[str] = set()
        self._streams = available_streams()
        self._watched: dict[str, Any] | None = None
        #: resumed from a checkpoint (not trained from the start)
        self.resumed = False
        #: where this run's step batches are kept, when the check keeps them
        self.log: list[tuple[str, ...]] | None = None
        #: the checkpoint the check handed to ``load`` (before :meth:`place`)
        self.checkpoint_from: Path | None = None

    def record(self, batch: str, loss: float) -> None:
        self.records.append((batch, loss))

    def watch(self, begin: bool) -> None:
        """Called where a step's computation begins (``True``) and ends (``False``)."""
        now = {s: fingerprint(global_streams.read(s)) for s in self._streams if s not in self.drawn}
        if begin:
            self._watched = now
        elif self._watched is not None:
            self.drawn.update(s for s, value in now.items() if self._watched.get(s) != value)
            self._watched = None

    def train(self) -> Any:
        """The framework's training call from the start."""
        raise NotImplementedError

    def resume(self, checkpoint: Path) -> Any:
        """The framework's training call resumed from ``checkpoint`` (what :meth:`checkpoint` handed over)."""
        raise NotImplementedError

    def checkpoint(self) -> Path:
        """The file or directory the framework wrote after the step just done."""
        raise NotImplementedError

    def place(self, checkpoint: Path) -> Path:
        """Where the resumed run reads ``checkpoint`` from: it is resumed as the run that stopped would be,
        so a framework that looks beside it finds what it wrote there (by default: where it is)."""
        return checkpoint

    def view(self) -> dict[str, Any]:
        """The components of the run now: attribute name -> object (set on the :class:`TrainerRun`)."""
        raise NotImplementedError


class Stepper:
    """``start``, ``step``, ``save``, ``load`` for ``check_resume``, over sessions that ``make_session(root)`` builds.

    ``close()`` ends every training call still paused (a check that stopped early). In a fresh process
    that runs the resumed half (``fresh=True``), the batches of the run it resumes go to
    ``roots/RESUMED``, where the parent's :meth:`collect` finds them.
    """

    #: the file in a fresh process's roots that holds its resumed run's batches
    RESUMED = "resumed-batches.json"

    def __init__(self, make_session: Callable[[Path], Session], roots: Path, names: dict[str, str], *,
                 fresh: bool = False) -> None:
        self.make_session, self.roots, self.fresh = make_session, roots, fresh
        self._sessions: weakref.WeakKeyDictionary[TrainerRun, Session] = weakref.WeakKeyDictionary()
        self._drivers: list[Driven] = []
        #: step -> the checkpoint the first run's framework wrote after it (as saved for the check)
        self.saved: dict[int, Path] = {}
        #: the batches (digests) of every step of the first uninterrupted run, and of each first resumed run
        #: by the step it resumed after (its steps ``at+1``.. only)
        self.batches: list[tuple[str, ...]] = []
        self.resumed_batches: dict[int, list[tuple[str, ...]]] = {}
        #: the global streams some step's computation drew from, in the uninterrupted runs
        self.drawn: set[str] = set()
        self._paths: dict[Path, int] = {}
        self._reference_taken = False
        self.start, self.step = _named(self._start, names["start"]), _named(self._step, names["step"])
        self.save, self.load = _named(self._save, names["save"]), _named(self._load, names["load"])

    def close(self) -> None:
        for driver in self._drivers:
            driver.stop()

    def collect(self) -> None:
        """The resumed batches that fresh processes wrote under ``roots``, by the step they resumed after."""
        for found in sorted(self.roots.glob(f"*/{self.RESUMED}")):
            record = json.loads(found.read_text())
            at = self._paths.get(Path(record["path"]))
            if at is not None and not self.resumed_batches.get(at):  # a start and load here trains no step
                self.resumed_batches[at] = [tuple(b) for b in record["batches"]]

    def _start(self) -> TrainerRun:
        root = self.roots / f"run-{len(self._drivers) + 1}"
        session = self.make_session(root)
        self._drivers.append(session.driver)
        run = TrainerRun()
        self._sessions[run] = session
        _refresh(run, session)
        return run

    def _step(self, run: TrainerRun) -> tuple[float, tuple[str, ...]]:
        session = self._sessions[run]
        if not session.driver.started:
            if not self._reference_taken:  # the first uninterrupted run's batches are the reference
                self._reference_taken, session.log = True, self.batches
            if not session.driver.advance(session.train):
                raise ResumeError(f"{session.trainer_name} trained no step")
        session.records.clear()
        session.driver.advance()
        session.steps += 1
        _refresh(run, session)
        if not session.records:
            raise ResumeError(f"{session.trainer_name} stopped before the step the check expected "
                              f"(its training call returned)")
        batch = tuple(b for b, _ in session.records)
        if session.log is not None:
            session.log.append(batch)
            if self.fresh and session.resumed:
                self.roots.mkdir(parents=True, exist_ok=True)
                (self.roots / self.RESUMED).write_text(json.dumps({"path": str(session.checkpoint_from),
                                                                   "batches": session.log}))
        if not session.resumed:
            self.drawn |= session.drawn
        return sum(loss for _, loss in session.records), batch

    def _save(self, run: TrainerRun, path: Path) -> None:
        # the framework's own file or directory, under its own name, in the folder the check gives
        written = self._sessions[run].checkpoint()
        if Path(path).exists():  # the check's own folder, saved into again by a rerun
            shutil.rmtree(path)
        Path(path).mkdir(parents=True)
        copy_tree(written, Path(path) / written.name)
        step = self._sessions[run].steps
        self.saved.setdefault(step, Path(path) / written.name)
        self._paths[Path(path)] = step

    def _load(self, run: TrainerRun, path: Path) -> None:
        session = self._sessions[run]
        (saved,) = Path(path).iterdir()
        checkpoint = session.place(saved)
        session.resumed, session.checkpoint_from = True, Path(path)
        at = self._paths.get(Path(path))
        if at is not None and at not in self.resumed_batches:
            session.log = self.resumed_batches[at] = []
        elif self.fresh:  # saved by the parent: it knows the step
            session.log = []
        if not session.driver.advance(lambda: session.resume(checkpoint)):
            raise ResumeError(f"{session.trainer_name} resumed from {checkpoint} and stopped without training "
                              f"a step")
        _refresh(run, session)


def _refresh(run: TrainerRun, session: Session) -> None:
    vars(run).clear()
    vars(run).update(session.view())


def copy_tree(source: Path, target: Path) -> None:
    """``source`` (a file or a directory) at ``target``, by hard links where the file system allows (a
    checkpoint copied for nothing), else copied. The framework may rotate its own copy away later."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, target, copy_function=link)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        link(str(source), str(target))


def _named(fn: Callable, name: str) -> Callable:
    """``fn`` under the name the check's messages give it (``transformers.Trainer.train``)."""
    def call(*args: Any) -> Any:
        return fn(*args)

    module, _, qualname = name.rpartition(":")
    call.__module__, call.__qualname__, call.__name__ = module, qualname, qualname.rpartition(".")[2]
    return call
