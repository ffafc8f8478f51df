"""``check_resume``: the project's training run three ways, compared, and the difference explained.

1. the uninterrupted run, which saves after step ``at`` and goes on, as training that checkpoints
   does: its first ``at`` steps are the interrupted run;
2. the same again when ``reproducible`` (a run that disagrees with itself proves nothing), up to
   the last resume point; to the end only when the resumed run differs, before the resume is
   blamed (a resumed run that matches to the end has reproduced the second half already);
3. the resumed run: ``start`` under another seed, ``load``, the remaining steps.

So a passing check costs two runs of the steps (one, the interrupted run's first half again, and
the resumed part), three starts, one save and one load.

The resumed state right after ``load`` is compared with the uninterrupted run's after step ``at``,
component by component, then every later loss, batch and the final state.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import NotReproducible, ResumeMismatch
from ..report import progress
from . import streams as global_streams
from .compare import (Difference, compare_states, first_divergence, first_state_divergence, ledger,
                      losses_differ, matching_step, without_generator_echoes)
from .capture import Unreadable
from .evidence import Evidence, set_aside
from .report import ResumePoint, ResumeReport
from .rules import Findings, explain
from .saved import weight_prefix
from .runner import Functions, Trace, resumed_half, seeded, uninterrupted
from .state import available_streams, ignored

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
    ignore: str | Iterable[str] = (),
    wrap: Callable | None = None,
    fresh_process: Any = False,
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

    ``ignore``: paths of state the project re-derives on purpose rather than restoring (``"run.it"``,
    ``'run["loader"]'``; ``*`` matches any run of characters; a path covers what lies inside it), or a
    global stream (``"numpy"``): never read, never compared, listed in ``.not_compared``.

    Hooks for the pytest variations (keyword-only; the plugin passes them):

    - ``wrap``: a callable applied to every top-level module of the run that one of its optimizers
      trains once the run is built, in all three runs: right after ``start``, and in the resumed run
      after ``load`` returns, so ``load`` restores into the bare modules as real projects do before
      they wrap (``lambda m: torch.compile(m, backend="eager")``, ``DistributedDataParallel``); the
      wrapper is put back where the module was and comparisons see through it; a ``load`` that
      expected the wrapper raises :class:`~pytest_ckpt.errors.ResumeError` with one ``[prefix]`` cause;
    - ``fresh_process=True``: the resumed half runs in a new Python process
      (``python -m pytest_ckpt.resume.child``); ``start``, ``step``, ``save``, ``load`` (and ``wrap``)
      must be importable module-level functions and ``config`` picklable, else
      :class:`~pytest_ckpt.errors.ResumeUnavailable` says why before anything runs. The child is
      killed after ``timeout`` seconds and never outlives the check (a prepared
      :class:`~pytest_ckpt.resume.child.FreshProcess` instead of ``True``: its functions, its timeout);
    - ``workdir``: where checkpoints (and the child's files) go; a temporary directory by default.

    >>> report = pc.check_resume(start, step, save=save, load=load, steps=6, at=3)   # doctest: +SKIP
    >>> print(report)                                                                # doctest: +SKIP
    ok: resume after step 3 matches the uninterrupted run (6 steps, losses bitwise, 9 components compared)
    """
    __tracebackhide__ = True
    points = resume_points(steps, at)
    _check_arguments(start=start, step=step, save=save, load=load, atol=atol, rtol=rtol)
    fns = Functions(start, step, save, load, config, wrap, ignore_paths(ignore))
    job = None
    if fresh_process is True:
        from .child import FreshProcess

        job = FreshProcess.prepare(fns, timeout)  # raises ResumeUnavailable before anything runs
    elif fresh_process:
        job = fresh_process
    streams = tuple(s for s in available_streams() if not ignored(s, fns.ignore))
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
    progress.doing("uninterrupted run")
    ref = uninterrupted(fns, steps, streams, doing="uninterrupted run", snapshot_at=(*points, steps),
                        save_to=checkpoints)
    clock["uninterrupted"] = time.perf_counter()
    compared = _compared(ref, points)
    unstable: list[str] = []

    def resume(at: int, prints: str = "none") -> Trace:
        progress.doing(f"resumed half after step {at}{' running in a fresh process' if job is not None else ''}")
        if job is not None:
            return job.run(checkpoints[at], at, steps, streams, workdir, prints=prints)
        return resumed_half(fns, checkpoints[at], at, steps, streams, prints=prints)

    rerun = _Rerun(fns, steps, streams, resume, _saves(workdir, "rerun", points))
    gate_seconds = 0.0

    def gate(last: int) -> None:
        # the same run again up to step `last`, saves included (a save that draws from an RNG does it in
        # both) except one after `last` itself: the snapshot there is taken before it
        nonlocal compared, gate_seconds
        began = time.perf_counter()
        progress.doing("second uninterrupted run (the run must agree with itself)")
        saves = {p: path for p, path in _saves(workdir, "again", points).items() if p < last}
        again = uninterrupted(fns, last, streams, doing="second uninterrupted run", snapshot_at=(last,),
                              prints="none", save_to=saves)
        unstable.extend(_gate(ref, again, last, compared, atol, rtol, rerun))
        compared = {p: k for p, k in compared.items() if p not in unstable}
        gate_seconds += time.perf_counter() - began

    if reproducible:
        gate(points[-1])
    resumed = {at: resume(at) for at in points}

    def differences() -> dict[int, tuple]:
        return {at: _differences(ref, resumed[at], at, steps, compared, atol, rtol, fns.ignore) for at in points}

    found = differences()
    if reproducible and not all(_matched(f) for f in found.values()):
        gate(steps)  # the resumed run differs: does the run's second half reproduce itself?
        found = differences()  # without what the gate found differing run to run
    results = [_judge(ref, resumed[at], at, steps, found[at], checkpoints[at], rerun) for at in points]
    clock["reproducible"] = clock["uninterrupted"] + gate_seconds
    clock["interrupted"] = time.perf_counter()
    not_compared = _not_compared(ref, streams, points, compared, unstable, fns.ignore)
    for point in results:
        for path, why in point.set_aside.items():
            not_compared.setdefault(path, why)
    seconds = {"uninterrupted": clock["uninterrupted"] - clock["start"],
               "reproducible": clock["reproducible"] - clock["uninterrupted"],
               "interrupted": clock["interrupted"] - clock["reproducible"],
               "total": clock["interrupted"] - clock["start"]}
    return ResumeReport(
        steps=steps, at=at_arg if isinstance(at_arg, tuple) else points[0], losses=list(ref.losses),
        points=results, compared={p: k for p, k in compared.items() if p not in not_compared},
        not_compared=not_compared, atol=atol, rtol=rtol, seconds=seconds)


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
            progress.doing("uninterrupted run again, to locate the difference")
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


def _differences(ref: Trace, resumed: Trace, at: int, steps: int, compared: dict[str, str], atol: float,
                 rtol: float, ignore: tuple[str, ...]) -> tuple:
    """What differs between the resumed run and the uninterrupted one: ``(kinds, after_load, final,
    first divergence, set aside)``. The interrupted run's first ``at`` steps are the uninterrupted
    run's (it saved and went on)."""
    # and what only the resumed run holds: a component its load added (a fresh process saw no ignore=)
    kinds = {**compared, **{p: k for p, k in resumed.kinds.items() if p not in ref.kinds and not ignored(p, ignore)}}
    paths = list(kinds)
    expected, actual = ref.snapshots[at], resumed.snapshots[at]
    after_load = without_generator_echoes(compare_states(expected, actual, kinds, paths, atol=atol, rtol=rtol),
                                          expected)
    final = compare_states(ref.snapshots[steps], resumed.snapshots[steps], kinds, paths, atol=atol, rtol=rtol)
    first = first_divergence(ref.losses, ref.losses[:at] + resumed.losses, ref.batches,
                             ref.batches[:at] + resumed.batches, at, atol=atol, rtol=rtol)
    after_load, final, aside = set_aside(after_load, final, ref, resumed, continuation_matches=first is None,
                                         batches_followed=None not in resumed.batches)
    return kinds, after_load, final, first, aside


def _matched(differences: tuple) -> bool:
    _, after_load, final, first, _ = differences
    return first is None and not after_load and not final


def _judge(ref: Trace, resumed: Trace, at: int, steps: int, differences: tuple, checkpoint: Path,
           rerun: _Rerun) -> ResumePoint:
    """One resume point: what differs right after load (``differences``, from :func:`_differences`),
    from which step, and why."""
    kinds, after_load, final, first, aside = differences
    losses = ref.losses[:at] + resumed.losses
    batches = ref.batches[:at] + resumed.batches
    if _matched(differences):
        return ResumePoint(at, losses, set_aside=aside)
    for d in after_load:  # load left it as start built it
        d.untouched = d.path in resumed.before_load and resumed.before_load[d.path] == resumed.prints[0].get(d.path)
    led = ledger(ref.batches, batches, at)
    if first is not None:
        step, what = first
        divergence = {"step": step, "what": what, "expected": ref.losses[step - 1], "actual": losses[step - 1]}
    else:
        divergence = _state_divergence(rerun, at, [d.path for d in (*after_load, *final)])
    findings = _findings(ref, resumed, at, steps, after_load, final, led, (divergence["step"], divergence["what"]),
                         kinds, checkpoint, rerun)
    return ResumePoint(at, losses, divergence, explain(findings), [d.path for d in after_load], aside)


def _findings(ref: Trace, resumed: Trace, at: int, steps: int, after_load: list[Difference],
              final: list[Difference], led: list, divergence: tuple[int, str], kinds: dict[str, str],
              checkpoint: Path, rerun: _Rerun) -> Findings:
    """What the rules need beyond the differences: asked only as far as these differences need it."""
    expected, actual = ref.snapshots[at], resumed.snapshots[at]
    evidence = Evidence(checkpoint, expected, actual)
    drawn: frozenset[str] = frozenset()
    if _drawn_asks(after_load):  # load set it, or left what a random stream drew? one more start and load tells
        try:
            drawn = seeded(rerun.fns, checkpoint, at, rerun.streams, resumed.prints[0],
                           [d.path for d in after_load if not d.absent and d.kind != "module"])
        except Exception:  # noqa: BLE001 - evidence for the wording only: the verdict stands without it
            drawn = frozenset()
    # the earlier step of the uninterrupted run whose state a differing component holds after load
    behind = {}
    for d in after_load:
        if d.path in resumed.prints[0] and _behind_asks(d, after_load, led, drawn):
            step = matching_step(rerun.ref().prints, d.path, resumed.prints[0][d.path], before=at)
            if step is not None:
                behind[d.path] = step
    prefixes = {}
    for d in after_load:  # weights that load left alone: do the checkpoint's names carry a wrapper prefix?
        found = weight_prefix(checkpoint, expected[d.path]) if d.untouched and d.kind == "module" else None
        if found and "".join(found[1]) != resumed.wrappers.get(d.path, ""):  # a prefix the live names lack
            prefixes[d.path] = found
    return Findings(
        at=at, steps=steps, restore=after_load, final=final, ledger=led, divergence=divergence, compared=kinds,
        classes={**resumed.classes, **ref.classes}, trained=ref.trained, behind=behind,
        saved=evidence.locations(after_load), prefixes=prefixes, seeded=drawn,
        bookkeeping=ref.bookkeeping | resumed.bookkeeping, casts=evidence.casts(after_load),
        copies=evidence.copies(after_load, ref.trained), resumed_at=evidence.where_actual(after_load),
        position=evidence.position(led, at), files=tuple(sorted(os.listdir(checkpoint))) if checkpoint.is_dir() else ())


def _drawn_asks(after_load: list[Difference]) -> bool:
    """Whether the wording needs to know what load left to chance: a random state load touched, a tensor
    load set to another value, or a random state beside other state that may have been drawn from it."""
    rng = [d for d in after_load if d.kind in ("global-rng", "generator") and not d.absent]
    other = [d for d in after_load if d.kind in Evidence.DRAWN - {"global-rng", "generator"} and not d.absent]
    return any(not d.untouched for d in rng) or bool(rng and other) or any(
        d.kind == "tensor" and not d.untouched for d in other)


def _behind_asks(d: Difference, after_load: list[Difference], led: list, drawn: frozenset[str]) -> bool:
    """Whether a rule needs the step whose state ``d`` holds after load (it costs a rerun with fingerprints)."""
    if d.absent:
        return False
    if d.kind in ("module", "tensors") and not d.untouched:
        return True  # weights saved behind the optimizer, or an EMA behind the rest
    if d.kind == "generator" and led and led[0].how == "repeated":
        return True  # a generator back at the epoch start, the epoch drawn again
    if d.kind in ("global-rng", "generator") and not d.untouched and d.path not in drawn:
        return True  # restored from another time: which
    counters = any(c.kind == "counter" and not c.absent and type(c.items[0][1]) is int for c in after_load)
    return counters and d.kind in ("tensor", "tensors", "data", "state", "generator")


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
                  unstable: list[str], ignore: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pattern in ignore:
        held = [p for p in (*ref.left_out, *available_streams()) if ignored(p, (pattern,))]
        out[pattern] = ("left out with ignore=" if held else "ignore= names it, but the run holds nothing there")
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


def ignore_paths(ignore: Any) -> tuple[str, ...]:
    """``ignore=`` as a tuple of paths: one path, or an iterable of them."""
    values = (ignore,) if isinstance(ignore, str) else ignore
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"ignore={ignore!r}: give a path (\"run.it\") or a tuple of paths") from None
    for v in values:
        if not isinstance(v, str) or not v:
            raise TypeError(f"ignore={ignore!r}: each entry is a path such as \"run.it\" or 'run[\"loader\"]', "
                            f"not {v!r}")
    return values


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
