"""``interrupted``: the project's save, killed at every file boundary; its load must still return a
whole checkpoint, the previous one or the new one.

In a child process the save runs twice to the same path: to completion for model A (the previous
checkpoint), then for a differently nudged model B, killed at boundary k, for every k
(:mod:`.crash`, :mod:`.boundaries`). Here, the project's ``load(path)`` runs on what each kill left:
it passes only when it returns A or B exactly; then the next save to that path must succeed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ... import api
from ...compare.origin import origin
from ...errors import InterruptedMismatch, VariationUnavailable
from ...formats import own
from ...processes.boundaries import read_events
from ...processes.ranks import importable, pickled
from ..explain import cast
from .base import SaveJob, SaveSide, describe
from .crash import CrashJob, run_crashes
from .crash_report import HARD_FAIL, LOST, PASS, SILENT, InterruptedReport, Outcome, written_in_place

#: the two models' nudges (A: the previous checkpoint, B: the one being saved when the kill comes)
SEEDS = (0x5EED_A, 0x5EED_B)


class InterruptedSaveError(Exception):
    """The project's save cannot be crash-tested: it raised, wrote nothing, or wrote elsewhere."""


class Interrupted(SaveSide):
    """Not a produce-then-load variation: it runs the project's load once per kill itself."""

    runs_load = True
    default_save = "-"

    def check(self, job: SaveJob, load: Callable[[Path], Any] | None, *,
              loaded_with: str, dtype: torch.dtype | None = None) -> InterruptedReport:
        """Crash the project's save at each boundary, load each result; raise
        :class:`InterruptedMismatch` unless every kill passes. ``dtype``: a cast the load makes on
        purpose (the two checkpoints are compared after it)."""
        __tracebackhide__ = True
        started = time.perf_counter()
        if job.save is None:
            raise VariationUnavailable(
                "interrupted kills your save at every file boundary: pass save= (your training's save)")
        workdir = job.directory / "crashes"
        crash = CrashJob(
            factory=importable(job.factory, "factory"),
            config_blob=pickled(job.config, "config") if job.has_config else None,
            save=importable(job.save, "save"),
            save_name=f"model{self.suffix}",
            seeds=SEEDS,
            save_takes=tuple(sorted(job.save_takes)),
            jobs=max(1, min(4, os.cpu_count() or 1)),
        )
        saved_with = describe(job.save)
        try:
            run_crashes(crash, workdir, timeout=job.fsdp_timeout)
        except RuntimeError as exc:
            error = workdir / "error.txt"
            if error.exists():
                raise InterruptedSaveError(f"ckpt-interrupted: {error.read_text()}") from None
            raise RuntimeError(f"ckpt-interrupted: the child running your save {saved_with} "
                               f"failed:\n{exc}") from None
        report = judge(workdir, crash.save_name, job, load, saved_with=saved_with,
                       loaded_with=loaded_with, dtype=dtype)
        report.seconds = time.perf_counter() - started
        if not report.ok:
            raise InterruptedMismatch(report)
        return report


def judge(workdir: Path, name: str, job: SaveJob, load: Callable | None, *, saved_with: str,
          loaded_with: str, dtype: torch.dtype | None = None) -> InterruptedReport:
    """Load what each kill in ``workdir`` left, and classify it."""
    __tracebackhide__ = True
    a = own.read_torch(workdir / "a.pt")  # written by the crash child: crash.py
    b = own.read_torch(workdir / "b.pt")
    boundaries = read_events(workdir / "boundaries.json")
    status = {int(k): v for k, v in json.loads((workdir / "status.json").read_text()).items()}
    complete = workdir / "complete"
    files = tuple(sorted(str(p.relative_to(complete)) for p in complete.rglob("*") if p.is_file()))

    uninterrupted = _load(job, load, complete / name, dtype)
    if isinstance(uninterrupted, BaseException) or _origin(uninterrupted, a, b, dtype).verdict != "new":
        what = (f"raised {type(uninterrupted).__name__}: {_first_line(uninterrupted, complete)}"
                if isinstance(uninterrupted, BaseException)
                else f"returned {_origin(uninterrupted, a, b, dtype)}")
        raise InterruptedMismatch(
            InterruptedReport(saved_with, loaded_with, [], files),
            f"ckpt-interrupted round trip (saved with {saved_with}, loaded with {loaded_with}): "
            f"with no kill at all, your load {what}, not the model your save saved over its previous "
            "checkpoint; make the plain round trip pass first")

    # a directory save's boundaries are named inside it, a file save's beside it
    named_from = complete / name if (complete / name).is_dir() else complete
    outcomes, not_run = [], []
    for k, boundary in enumerate(boundaries):
        root = workdir / f"kill-{k}"
        where = boundary.describe(named_from)
        ended = status.get(k, "not started")
        if ended != "killed":
            log = workdir / f"kill-{k}.log"
            if ended == "raised" and log.exists():
                last = log.read_text().strip().splitlines()[-1:]
                outcomes.append(Outcome(where, HARD_FAIL, f"your save raised before this point, over "
                                        f"a copy of its previous checkpoint: {' '.join(last)}"))
            else:
                not_run.append(f"{where} ({ended})")
            continue
        outcomes.append(_classify(job, load, root, name, where, a, b, dtype, torn=boundary.kind == "torn"))
    if not outcomes:
        raise InterruptedSaveError(f"ckpt-interrupted: no kill of your save {saved_with} happened as "
                                   f"planned: {'; '.join(not_run[:3])}")
    return InterruptedReport(saved_with, loaded_with, outcomes, files, not_run,
                             in_place=written_in_place(boundaries, complete / name, workdir / "base" / name))


def _classify(job: SaveJob, load: Callable | None, root: Path, name: str, where: str,
              a: dict, b: dict, dtype: torch.dtype | None, *, torn: bool) -> Outcome:
    loaded = _load(job, load, root / name, dtype)
    if isinstance(loaded, BaseException):
        outcome = Outcome(where, HARD_FAIL, f"your load raised {type(loaded).__name__}: "
                          f"{_first_line(loaded, root)}; the previous checkpoint is gone, training "
                          "cannot resume", torn=torn)
    else:
        found = _origin(loaded, a, b, dtype)
        verdict = found.verdict
        if verdict in ("previous", "new"):
            outcome = Outcome(where, PASS, f"your load returned the {verdict} checkpoint", torn=torn,
                              loaded=verdict)
        elif verdict == "none":
            outcome = Outcome(where, LOST, f"your load returned a model of neither checkpoint "
                              f"({found}): training would start again from scratch", torn=torn)
        else:
            outcome = Outcome(where, SILENT, f"your load returned a model of neither checkpoint: "
                              f"{found}", torn=torn)
    failed = _next_save(job, root / name)
    if failed is not None:
        detail = f"the next save to the path raised {failed}"
        if outcome.verdict != PASS:
            detail = f"{outcome.detail}; and {detail}"
        outcome = Outcome(where, HARD_FAIL, detail, torn=torn)
    return outcome


def _load(job: SaveJob, load: Callable | None, path: Path, dtype: torch.dtype | None) -> Any:
    """The project's load (or ``pc.load_into`` of a fresh model, with the declared cast): the model,
    or the exception."""
    try:
        return job.load_fresh(path, dtype=dtype) if load is None else load(path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - every exception is an outcome (DCP's are BaseException)
        return exc


def _origin(loaded: Any, a: dict, b: dict, dtype: torch.dtype | None):
    """Which checkpoint each loaded tensor comes from, the two compared after the declared cast
    (rounded to ``dtype`` and back to the dtype the load returned)."""
    tensors = _tensors(loaded)
    dtypes = {k: v.dtype for k, v in tensors.items()}
    return origin(tensors, cast(a, dtype, like=dtypes), cast(b, dtype, like=dtypes))


def _tensors(loaded: Any) -> dict[str, torch.Tensor]:
    try:
        return api.load_state_dict(loaded)
    except Exception:  # noqa: BLE001 - a load that returns something unreadable returns neither
        return {}


def _next_save(job: SaveJob, path: Path) -> str | None:
    """``None`` when the project's save writes over what the kill left, else what it raised."""
    try:
        job.call_save(job.build(), path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - every exception is an outcome
        return f"{type(exc).__name__}: {_first_line(exc, path.parent)}"
    return None


def _first_line(exc: BaseException, root: Path) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()] or [""]
    # an error that carries another's traceback (DCP's CheckpointException): the last line is the cause
    line = lines[-1] if any(line.startswith("Traceback") for line in lines) else lines[0]
    text = line.strip().replace(str(root) + os.sep, ".../")
    return text if len(text) <= 200 else text[:197] + "..."


INTERRUPTED = Interrupted()
