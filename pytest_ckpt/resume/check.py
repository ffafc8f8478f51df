"""``check_resume``: the project's training run three ways, compared, and the difference explained.

1. the uninterrupted run, which saves after step ``at`` and goes on, as training that checkpoints
   does: its first ``at`` steps are the interrupted run;
2. the same again when ``reproducible`` (a run that disagrees with itself proves nothing);
3. the resumed run: ``start`` under another seed, ``load``, the remaining steps.

So the check costs two runs and the resumed part of a third, plus one save per run.

The resumed state right after ``load`` is compared with the uninterrupted run's after step ``at``,
component by component, then every later loss, batch and the final state.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import NotReproducible, ResumeMismatch
from . import streams as global_streams
from .compare import (compare_states, first_divergence, first_state_divergence, ledger, losses_differ,
                      matching_step, without_generator_echoes)
from .capture import Unreadable
from .report import ResumePoint, ResumeReport
from .rules import Findings, explain
from .saved import read_checkpoint, weight_prefix, where
from .runner import Functions, Trace, resumed_half, uninterrupted
from .state import available_streams

#: seconds a fresh process may take for the resumed half, start-up included, when the caller gives none
FRESH_PROCESS_TIMEOUT = 600.0


def check_resume(
    start: Callable,
    step: Callable,
    *,
    save: Callable,
    load: Callable,
    steps: int = 6,
    at: int | tuple[int, ...] | None = None,
    config: Any = None,
    atol: float = 0.0,
    rtol: float = 0.0,
    reproducible: bool = True,
    wrap: Callable | None = None,
    fresh_process: bool = False,
    workdir: str | Path | None = None,
    timeout: float = FRESH_PROCESS_TIMEOUT,
) -> ResumeReport:
    """Check that training which stops after step ``at`` and resumes is the training that never stopped.

    ``start(config)`` (``start()`` without config) builds a run, ``step(run)`` trains one step and returns
    the loss or ``(loss, batch)``, ``save(run, path)`` writes a checkpoint, ``load(run, path)`` restores
    into a freshly started run and returns the run to continue (or ``None``). Raises
    :class:`~pytest_ckpt.errors.ResumeMismatch` (an ``AssertionError`` whose ``.report`` is the
    :class:`ResumeReport`) when anything differs, :class:`~pytest_ckpt.errors.NotReproducible` when the
    uninterrupted run disagrees with itself. The caller's global random states are put back at the end.

    Hooks for the pytest variations (keyword-only; the plugin passes them):

    - ``wrap``: a callable applied to every top-level module of the run that one of its optimizers
      trains, right after ``start``, in all three runs (``lambda m: torch.compile(m, backend="eager")``,
      ``DistributedDataParallel``); the wrapper is put back where the module was and comparisons see
      through it;
    - ``fresh_process=True``: the resumed half runs in a new Python process
      (``python -m pytest_ckpt.resume.child``); ``start``, ``step``, ``save``, ``load`` (and ``wrap``)
      must be importable module-level functions and ``config`` picklable, else
      :class:`~pytest_ckpt.errors.ResumeUnavailable` says why before anything runs. The child is
      killed after ``timeout`` seconds and never outlives the check;
    - ``workdir``: where checkpoints (and the child's files) go; a temporary directory by default.

    >>> report = pc.check_resume(start, step, save=save, load=load, steps=6, at=3)   # doctest: +SKIP
    >>> print(report)                                                                # doctest: +SKIP
    ok: resume after step 3 matches the uninterrupted run (6 steps, losses bitwise, 9 components compared)
    """
    __tracebackhide__ = True
    points = resume_points(steps, at)
    _check_arguments(start=start, step=step, save=save, load=load, atol=atol, rtol=rtol)
    fns = Functions(start, step, save, load, config, wrap)
    job = None
    if fresh_process:
        from .child import FreshProcess

        job = FreshProcess.prepare(fns, timeout)  # raises ResumeUnavailable before anything runs
    streams = available_streams()
    caller_streams = global_streams.save(streams)
    try:
        with _workdir(workdir) as directory:
            report = _check(fns, steps, points, at, streams, atol, rtol, reproducible, directory, job)
    finally:
        global_streams.restore(caller_streams)
    if not report.ok:
        raise ResumeMismatch(report)
    return report


def _check(fns: Functions, steps: int, points: tuple[int, ...], at_arg: Any, streams: tuple[str, ...],
           atol: float, rtol: float, reproducible: bool, workdir: Path, job: Any) -> ResumeReport:
    clock = {"start": time.perf_counter()}
    # The uninterrupted run saves after each resume point and goes on, as training that checkpoints
    # does: its first `at` steps are the interrupted run's first half, so that half costs nothing.
    checkpoints = _saves(workdir, "uninterrupted", points)
    ref = uninterrupted(fns, steps, streams, doing="uninterrupted run", snapshot_at=(*points, steps),
                        save_to=checkpoints)
    clock["uninterrupted"] = time.perf_counter()
    compared = _compared(ref, points)
    unstable: list[str] = []

    def resume(at: int, prints: str = "none") -> Trace:
        if job is not None:
            return job.run(checkpoints[at], at, steps, streams, workdir, prints=prints)
        return resumed_half(fns, checkpoints[at], at, steps, streams, prints=prints)

    rerun = _Rerun(fns, steps, streams, resume, _saves(workdir, "rerun", points))
    if reproducible:
        # the same run again, saves included (a save that draws from an RNG does it in both)
        again = uninterrupted(fns, steps, streams, doing="second uninterrupted run", snapshot_at=(steps,),
                              prints="none", save_to=_saves(workdir, "again", points))
        unstable = _gate(ref, again, steps, compared, atol, rtol, rerun)
        compared = {p: k for p, k in compared.items() if p not in unstable}
    clock["reproducible"] = time.perf_counter()
    results = [_judge(ref, resume(at), at, steps, compared, atol, rtol, checkpoints[at], rerun) for at in points]
    clock["interrupted"] = time.perf_counter()
    seconds = {"uninterrupted": clock["uninterrupted"] - clock["start"],
               "reproducible": clock["reproducible"] - clock["uninterrupted"],
               "interrupted": clock["interrupted"] - clock["reproducible"],
               "total": clock["interrupted"] - clock["start"]}
    return ResumeReport(
        steps=steps, at=at_arg if isinstance(at_arg, tuple) else points[0], losses=list(ref.losses),
        points=results, compared=compared, not_compared=_not_compared(ref, streams, points, compared, unstable),
        atol=atol, rtol=rtol, seconds=seconds)


def _saves(workdir: Path, run: str, points: Iterable[int]) -> dict[int, Path]:
    """Where one run's checkpoints go: step -> path, a folder per run."""
    return {at: workdir / run / f"checkpoint-after-step-{at}" for at in points}


class _Rerun:
    """Runs again with every component fingerprinted after every step, to say *where* runs part.

    Only a failure needs it, so a passing check never pays for it; the uninterrupted rerun is kept.
    """

    def __init__(self, fns: Functions, steps: int, streams: tuple[str, ...], resume: Callable,
                 save_to: dict[int, Path]) -> None:
        self.fns, self.steps, self.streams, self.resume = fns, steps, streams, resume
        self.save_to = save_to  # it saves where the uninterrupted run saved, so it runs as that run ran
        self._ref: Trace | None = None

    def ref(self) -> Trace:
        if self._ref is None:
            self._ref = uninterrupted(self.fns, self.steps, self.streams, prints="all", save_to=self.save_to,
                                      doing="uninterrupted run, again to locate a difference")
        return self._ref

    def resumed(self, at: int) -> Trace:
        return self.resume(at, prints="all")

    def unreproducible(self, paths: Iterable[str]) -> tuple[int, str] | None:
        """The first step (0: right after start) and component where two uninterrupted runs part."""
        other = uninterrupted(self.fns, self.steps, self.streams, prints="all", save_to=self.save_to,
                              doing="uninterrupted run, again to locate a difference")
        return first_state_divergence(self.ref().prints, other.prints, -1, paths)


def _judge(ref: Trace, resumed: Trace, at: int, steps: int, compared: dict[str, str],
           atol: float, rtol: float, checkpoint: Path, rerun: _Rerun) -> ResumePoint:
    """One resume point: what differs right after load, from which step, and why. The
    interrupted run's first ``at`` steps are the uninterrupted run's (it saved and went on)."""
    # and what only the resumed run holds: a component its load added
    kinds = {**compared, **{p: k for p, k in resumed.kinds.items() if p not in ref.kinds}}
    paths = list(kinds)
    expected, actual = ref.snapshots[at], resumed.snapshots[at]
    after_load = without_generator_echoes(compare_states(expected, actual, kinds, paths, atol=atol, rtol=rtol),
                                          expected)
    final = compare_states(ref.snapshots[steps], resumed.snapshots[steps], kinds, paths, atol=atol, rtol=rtol)
    losses = ref.losses[:at] + resumed.losses
    batches = ref.batches[:at] + resumed.batches
    first = first_divergence(ref.losses, losses, ref.batches, batches, at, atol=atol, rtol=rtol)
    if first is None and not after_load and not final:
        return ResumePoint(at, losses)
    behind = {}
    for d in after_load:
        d.untouched = d.path in resumed.before_load and resumed.before_load[d.path] == resumed.prints[0].get(d.path)
        if d.kind in ("module", "tensors") and not d.untouched and d.path in resumed.prints[0]:
            step = matching_step(rerun.ref().prints, d.path, resumed.prints[0][d.path], before=at)
            if step is not None:
                behind[d.path] = step
    if first is not None:
        step, what = first
        divergence = {"step": step, "what": what, "expected": ref.losses[step - 1], "actual": losses[step - 1]}
    else:
        divergence = _state_divergence(rerun, at, [d.path for d in (*after_load, *final)])
    saved, prefixes = {}, {}
    untouched = [d for d in after_load if d.untouched and d.kind != "module"]
    held = read_checkpoint(checkpoint) if untouched else None
    if held is not None:  # only to tell "not saved" from "saved, not loaded"
        saved = {d.path: where(held.objects, d.kind, d.path, expected[d.path]) for d in untouched}
        if held.partial:  # a file read only in part: a state found nowhere may still be in it
            saved = {p: at for p, at in saved.items() if at is not None}
    for d in after_load:  # weights that load left alone: do the checkpoint's names carry a wrapper prefix?
        found = weight_prefix(checkpoint, expected[d.path]) if d.untouched and d.kind == "module" else None
        if found and "".join(found[1]) != resumed.wrappers.get(d.path, ""):  # a prefix the live names lack
            prefixes[d.path] = found
    findings = Findings(
        at=at, steps=steps, restore=after_load, final=final, ledger=ledger(ref.batches, batches, at),
        divergence=(divergence["step"], divergence["what"]), compared={p: kinds[p] for p in paths},
        classes=ref.classes, trained=ref.trained, behind=behind, saved=saved, prefixes=prefixes)
    return ResumePoint(at, losses, divergence, explain(findings), [d.path for d in after_load])


def _state_divergence(rerun: _Rerun, at: int, differing: list[str]) -> dict:
    """Every loss and batch matched: the first step after which one of the differing components parts."""
    aligned = [{}] * at + rerun.resumed(at).prints  # its prints[0] is right after load: "after step at"
    located = first_state_divergence(rerun.ref().prints, aligned, at, differing)
    step, path = located if located else (at + 1, differing[0])
    return {"step": step, "what": path, "expected": None, "actual": None}


def _gate(ref: Trace, other: Trace, last: int, compared: dict[str, str], atol: float, rtol: float,
          rerun: _Rerun) -> list[str]:
    """Raise NotReproducible where two runs from the same seed part (steps up to ``last``).

    Counters that differ while every loss, batch and all other state agree (a clock, a timer) feed
    no loss: they are returned, to be left out of the comparison, rather than failing the gate.
    """
    for n in range(1, last + 1):
        if ref.batches[n - 1] != other.batches[n - 1]:
            raise NotReproducible(n, "batch", "step returned another batch")
        if losses_differ(ref.losses[n - 1], other.losses[n - 1], atol=atol, rtol=rtol):
            raise NotReproducible(n, "loss", f"loss {ref.losses[n - 1]!r} vs {other.losses[n - 1]!r}; "
                                  f"seed or fix every source of randomness the run uses")
    if last not in ref.snapshots or last not in other.snapshots:
        return []
    differs = compare_states(ref.snapshots[last], other.snapshots[last], compared, compared, atol=atol, rtol=rtol)
    if differs and any(d.kind != "counter" for d in differs):
        located = rerun.unreproducible([d.path for d in differs])
        step, path = located if located else (last, differs[0].path)
        raise NotReproducible(step, path, "its state differs between two runs from the same seed; "
                              "seed or fix every source of randomness the run uses")
    return [d.path for d in differs]


def _compared(ref: Trace, points: tuple[int, ...]) -> dict[str, str]:
    """path -> kind of what the check compares: every component it could read, and the streams a step draws from."""
    return {p: k for p, k in ref.kinds.items()
            if (p in ref.drawn if k == "global-rng" else not isinstance(ref.snapshots[points[0]].get(p), Unreadable))}


def _not_compared(ref: Trace, streams: tuple[str, ...], points: tuple[int, ...], compared: dict[str, str],
                  unstable: list[str]) -> dict[str, str]:
    out = {}
    for s in streams:
        if s not in ref.drawn:
            out[s] = "no step of the uninterrupted run draws from it"
    for path in unstable:
        out[path] = ("it differs between two uninterrupted runs from the same seed while every loss matches "
                     "(a clock or a timer?)")
    for path, value in ref.snapshots[points[0]].items():
        if isinstance(value, Unreadable):
            out[path] = f"its state could not be read: {value}"
    if all(b is None for b in ref.batches):
        out["data position"] = "step returns no batch: return (loss, batch) to follow the data"
    if set(compared.values()) <= {"module", "global-rng"}:
        out["training state beyond the weights"] = ("the run holds no optimizer, scheduler, scaler, generator, "
                                                    "data position, counter or tensor state")
    return out


def resume_points(steps: Any, at: Any) -> tuple[int, ...]:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ValueError(f"steps={steps!r}: a resume check needs at least 2 steps (one before the save, one after)")
    if at is None:
        return (steps // 2,)
    values = at if isinstance(at, tuple) else (at,)
    for a in values:
        if not isinstance(a, int) or isinstance(a, bool) or not 1 <= a < steps:
            raise ValueError(f"at={at!r}: each resume point must be a step from 1 to {steps - 1} "
                             f"(save after it, then resume; steps={steps})")
    return tuple(sorted(set(values)))


def _check_arguments(**kw: Any) -> None:
    for name in ("start", "step", "save", "load"):
        if not callable(kw[name]):
            raise TypeError(f"{name}={kw[name]!r} is not callable: check_resume needs the project's {name} function")
    for name in ("atol", "rtol"):
        if not isinstance(kw[name], (int, float)) or kw[name] < 0:
            raise ValueError(f"{name}={kw[name]!r}: a tolerance is a number >= 0")


class _workdir:
    """The given directory, or a temporary one removed afterwards."""

    def __init__(self, path: str | Path | None) -> None:
        self.path, self.tmp = path, None

    def __enter__(self) -> Path:
        if self.path is not None:
            Path(self.path).mkdir(parents=True, exist_ok=True)
            return Path(self.path)
        self.tmp = tempfile.TemporaryDirectory(prefix="pytest-ckpt-resume-")
        return Path(self.tmp.name)

    def __exit__(self, *exc: Any) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()
