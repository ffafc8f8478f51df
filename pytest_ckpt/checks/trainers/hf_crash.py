"""The child process of ``pc.check_interrupted_hf``: a Trainer's own save of ``checkpoint-<at>`` killed at
each of its file boundaries, over its complete ``checkpoint-<earlier>``, then each kill resumed as the
project resumes.

Started by :func:`pytest_ckpt.checks.trainers.hf_interrupted.check_interrupted_hf` as :func:`_main` on a
fresh rank worker (:func:`pytest_ckpt.processes.ranks.run_ranks`: it installs a tracer and forks). One
thread, so every run here trains as every other. In ``WORKDIR``:

- ``run/``: the uninterrupted ``train()``, saving after steps ``earlier`` and ``at`` (as ``save_steps``
  would) and going on to ``max_steps``: its losses and final weights are the reference;
- when it saves after step ``at``: ``base/`` is its output directory then (``checkpoint-<earlier>``);
  ``complete/`` a copy of it with the save traced to the end (its boundaries: ``boundaries.json``);
  ``kill-K/`` a copy with the save killed at boundary ``K``, in a forked child
  (:func:`pytest_ckpt.processes.crash.kill_each`); and the save run again over a copy of each
  ``kill-K/`` (the next save must write over what the kill left);
- once the run is done, each ``kill-K/`` (and ``complete/``) resumed by a fresh Trainer:
  ``train(resume_from_checkpoint=True)`` or from ``pc.latest_complete(output_dir).path``, to the end;
  ``result.json`` holds each outcome, as the parent reports it.

transformers is imported in :func:`_main`, in the child, never when pytest_ckpt is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ...processes import ranks
from ...processes.boundaries import Boundary, Tracer
from ...processes.children import unpickled
from ...processes.crash import kill_each
from ..variations.crash_report import HARD_FAIL, LOST, PASS, SILENT, Outcome
from ..variations.interrupted import _first_line as first_line

#: the two ways to resume: as ``resume_from_checkpoint=True`` does, or from the newest complete checkpoint
LAST, LATEST_COMPLETE = "get_last_checkpoint", "latest_complete"
#: the make_trainer's own error, or a save that cannot be crash-tested: in ``error.txt``
EXIT_BAD_RUN = 4


@dataclass
class HFCrashJob:
    """What the child needs (pickled by :func:`~pytest_ckpt.processes.ranks.run_ranks`)."""

    make_trainer: bytes
    at: int
    earlier: int
    resume: str
    jobs: int = 2
    #: seconds one kill child may take
    kill_timeout: float = 120.0


@dataclass
class Resumed:
    """One resume: the checkpoint it started from, and the losses and final weights it reached, or what
    it raised."""

    chosen: str | None
    step: int = 0
    losses: list[float] | None = None
    final: dict | None = None
    raised: str = ""


def _main(job_path: str, rank: int) -> int:
    workdir = Path(job_path).parent
    job = ranks.read_rank_job(job_path, lambda j: (j, unpickled(j.make_trainer)), "make_trainer")
    if job is None:
        return ranks.EXIT_UNAVAILABLE
    job, make_trainer = job
    import torch

    torch.set_num_threads(1)  # the kills are forked: no thread pool may be running at a fork
    try:
        reference = _uninterrupted(job, make_trainer, workdir)
    except _BadRun as exc:
        (workdir / "error.txt").write_text(str(exc))
        return EXIT_BAD_RUN
    judge = _Judge(job, make_trainer, reference)
    name = f"checkpoint-{job.at}"
    control = judge.outcome(workdir / "complete", f"no kill ({name} complete)", torn=False)
    events = json.loads((workdir / "boundaries.json").read_text())
    status = {int(k): v for k, v in json.loads((workdir / "status.json").read_text()).items()}
    next_saves = {int(k): v for k, v in json.loads((workdir / "next_saves.json").read_text()).items()}
    outcomes, not_run = [], []
    for k, event in enumerate(events):
        boundary = Boundary.from_dict(event)
        where = boundary.describe(workdir / "complete")  # traced there
        if status.get(k) != "killed":
            not_run.append(f"{where} ({status.get(k, 'not started')})")
            continue
        outcome = judge.outcome(workdir / f"kill-{k}", where, torn=boundary.kind == "torn")
        if next_saves.get(k):
            detail = f"the next save of {name} over what the kill left raised {next_saves[k]}"
            outcome = Outcome(where, HARD_FAIL, detail if outcome.verdict == PASS else f"{outcome.detail}; and {detail}",
                              torn=outcome.torn)
        outcomes.append(outcome)
    complete = workdir / "complete" / name
    files = sorted(str(p.relative_to(complete)) for p in complete.rglob("*") if p.is_file())
    (workdir / "result.json").write_text(json.dumps({
        "control": asdict(control), "outcomes": [asdict(o) for o in outcomes], "not_run": not_run, "files": files,
        "resumes": judge.runs}))
    (workdir / f"done-{rank}").touch()
    return 0


class _BadRun(Exception):
    """The uninterrupted run cannot be crash-tested (it raised, or never saved after step ``at``)."""


def _uninterrupted(job: HFCrashJob, make_trainer: Callable, workdir: Path) -> Resumed:
    """``train()`` from the start, saving after steps ``earlier`` and ``at``; at the save after ``at``, the
    kills. Returns its losses and final weights."""
    from .hf_session import SaveAfter

    out = workdir / "run"
    trainer = make_trainer(str(out))
    trainer.add_callback(SaveAfter((job.earlier, job.at)))
    losses = _recorded(trainer)
    save_checkpoint = trainer._save_checkpoint  # the Trainer's own, bound
    crashed = []

    def crash_then_save(model: Any, trial: Any) -> None:
        if trainer.state.global_step == job.at and not crashed:
            crashed.append(True)
            _crash(job, trainer, save_checkpoint, model, trial, out, workdir)
        save_checkpoint(model, trial)

    trainer._save_checkpoint = crash_then_save  # what the Trainer calls: self._save_checkpoint(model, trial)
    try:
        trainer.train()
    except _BadRun:
        raise
    except Exception as exc:  # noqa: BLE001 - the project's error, reported as its own
        raise _BadRun(f"make_trainer(output_dir).train() raised {type(exc).__name__}: {exc} (the uninterrupted "
                      f"run)\n{traceback.format_exc(limit=-3)}") from None
    if not crashed:
        raise _BadRun(f"the Trainer never saved after step {job.at} (its max_steps is {trainer.args.max_steps})")
    return Resumed(None, 0, losses, _weights(trainer))


def _crash(job: HFCrashJob, trainer: Any, save_checkpoint: Callable, model: Any, trial: Any, out: Path,
           workdir: Path) -> None:
    """The save after step ``at``: traced to the end over a copy of ``out``, then killed at each boundary."""
    name = f"checkpoint-{job.at}"
    base, complete = workdir / "base", workdir / "complete"
    shutil.copytree(out, base, symlinks=True)
    shutil.copytree(base, complete, symlinks=True)

    def save(t: Any, path: Path) -> None:  # the Trainer's own save, into the output directory that holds path
        t.args.output_dir = str(path.parent)
        try:
            save_checkpoint(model, trial)
        finally:
            t.args.output_dir = str(out)

    tracer = Tracer(complete).install()
    try:
        save(trainer, complete / name)
    except Exception as exc:  # noqa: BLE001
        tracer.uninstall()
        raise _BadRun(f"the Trainer's save of {name} raised {type(exc).__name__}: {exc}") from None
    tracer.uninstall()
    if not (complete / name).is_dir():
        raise _BadRun(f"the Trainer's save after step {job.at} wrote no {name} in its output_dir")
    (workdir / "boundaries.json").write_text(json.dumps([e.to_dict() for e in tracer.events]))
    status = kill_each(len(tracer.events), workdir, base, name, save, trainer, {}, jobs=job.jobs,
                       timeout=job.kill_timeout)
    (workdir / "status.json").write_text(json.dumps(status))
    next_saves = {}
    for k, ended in status.items():
        if ended == "killed":  # the next save to the same place, over what the kill left
            again = workdir / f"next-save-{k}"
            shutil.copytree(workdir / f"kill-{k}", again, symlinks=True)
            try:
                save(trainer, again / name)
            except Exception as exc:  # noqa: BLE001 - every exception is an outcome
                next_saves[k] = f"{type(exc).__name__}: {exc}"
            shutil.rmtree(again, ignore_errors=True)
    (workdir / "next_saves.json").write_text(json.dumps(next_saves))


class _Judge:
    """Resumes each kill's output directory with a fresh Trainer, as ``job.resume`` says, and compares the
    run with the uninterrupted one. A checkpoint resumed from before (the same files, byte for byte)
    trains the same: its run is reused."""

    def __init__(self, job: HFCrashJob, make_trainer: Callable, reference: Resumed) -> None:
        self.job, self.make_trainer, self.reference = job, make_trainer, reference
        self._done: dict[str, Resumed] = {}
        #: trainings run (the rest were reused)
        self.runs = 0

    def outcome(self, root: Path, where: str, *, torn: bool) -> Outcome:
        from transformers.trainer_utils import get_last_checkpoint

        from ...api import latest_complete

        latest = latest_complete(root).path
        chosen = Path(get_last_checkpoint(str(root)) or "") if self.job.resume == LAST else latest
        chosen = chosen if chosen and chosen.name else None
        resumed = self._resume(root, chosen)
        return classify(self.job, where, torn, self.reference, resumed, latest.name if latest else None)

    def _resume(self, root: Path, chosen: Path | None) -> Resumed:
        key = _fingerprint(chosen) if chosen is not None else "scratch"
        if key not in self._done:
            self.runs += 1
            self._done[key] = self._train(root, chosen)
        return self._done[key]

    def _train(self, root: Path, chosen: Path | None) -> Resumed:
        trainer = self.make_trainer(str(root))
        losses = _recorded(trainer)
        argument = True if self.job.resume == LAST else (str(chosen) if chosen is not None else None)
        try:
            trainer.train(resume_from_checkpoint=argument)
        except Exception as exc:  # noqa: BLE001 - every exception is an outcome
            return Resumed(chosen.name if chosen else None, raised=f"{type(exc).__name__}: {first_line(exc, root)}")
        step = len(self.reference.losses) - len(losses)
        return Resumed(chosen.name if chosen else None, step, losses, _weights(trainer))


def classify(job: HFCrashJob, where: str, torn: bool, reference: Resumed, resumed: Resumed,
             latest: str | None) -> Outcome:
    """One kill's outcome: how the resume went (``resumed``), beside the uninterrupted run (``reference``);
    ``latest``: the name of the newest complete checkpoint the kill left.

    >>> job = HFCrashJob(b"", at=4, earlier=2, resume=LAST)
    >>> ref = Resumed(None, 0, [3.0, 2.0, 1.5, 1.2, 1.0], {})
    >>> classify(job, "torn x", True, ref, Resumed("checkpoint-4", raised="OSError: torn"), "checkpoint-2").detail
    'resume_from_checkpoint=True picks checkpoint-4 and train() raised OSError: torn; checkpoint-2 beside it is whole'
    >>> classify(job, "x", False, ref, Resumed("checkpoint-2", 2, [1.5, 1.3, 1.0], {}), "checkpoint-2").detail
    'resume_from_checkpoint=True picks checkpoint-2, resumes from step 2 and trains on, but its loss at step 4 is 1.3 (uninterrupted: 1.2)'
    """
    how = "resume_from_checkpoint=True picks" if job.resume == LAST else "pc.latest_complete picks"
    picked = f"{how} {resumed.chosen}" if resumed.chosen else f"{how} no checkpoint"
    if resumed.raised:
        whole = f"; {latest} beside it is whole" if latest and resumed.chosen and latest != resumed.chosen else ""
        return Outcome(where, HARD_FAIL, f"{picked} and train() raised {resumed.raised}{whole}", torn=torn)
    if resumed.chosen is None:
        return Outcome(where, LOST, f"{picked}: training starts again from step 0", torn=torn)
    differs = _differs(reference, resumed)
    if differs:
        return Outcome(where, SILENT, f"{picked}, resumes from step {resumed.step} and trains on, but {differs}",
                       torn=torn)
    loaded = "new" if resumed.chosen == f"checkpoint-{job.at}" else "previous"
    return Outcome(where, PASS, f"{picked} and trains as the uninterrupted run", torn=torn, loaded=loaded)


def _recorded(trainer: Any) -> list[float]:
    """The loss of each optimizer step the trainer trains from now on (its micro-batches summed)."""
    from .hf_session import record_steps

    losses: list[float] = []

    def record(batch: str, loss: float) -> None:
        losses[-1] += loss

    record_steps(trainer, lambda: losses.append(0.0), record)
    return losses


def _weights(trainer: Any) -> dict:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _differs(reference: Resumed, resumed: Resumed) -> str:
    """How a resumed run differs from the uninterrupted one: the first loss, else the final weights."""
    import torch

    from ...compare.values import max_abs_diff

    for i, (want, got) in enumerate(zip(reference.losses[resumed.step:], resumed.losses), start=resumed.step + 1):
        if want != got and not (want != want and got != got):
            return f"its loss at step {i} is {got:.6g} (uninterrupted: {want:.6g})"
    other = [k for k, v in reference.final.items() if k not in resumed.final or not torch.equal(v, resumed.final[k])]
    if other:
        worst = max(other, key=lambda k: max_abs_diff(reference.final[k], resumed.final[k]) if k in resumed.final
                    else float("inf"))
        return (f"its final weights differ from the uninterrupted run's in {len(other)} of {len(reference.final)} "
                f"tensors ({worst} most)")
    return ""


def _fingerprint(path: Path) -> str:
    """The checkpoint's files, byte for byte."""
    h = hashlib.sha256(path.name.encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


if __name__ == "__main__":
    ranks.rank_entry(_main)
