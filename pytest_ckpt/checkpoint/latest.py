"""The newest complete checkpoint of a directory: what a resume falls back to after a killed save.

Candidates: every directory and every file with a checkpoint suffix (hidden names, an atomic save's
temporary files, left out), or the names that match ``pattern``; in a ``transformers.Trainer``
output directory, its ``checkpoint-N`` directories (not its logs or its final model).

Newest first, by the step:

- names that share one pattern (``step-9``, ``step-10``; ``ckpt-2024-12-31``, ``ckpt-2025-01-05``)
  are ordered by their numbers, compared as numbers, left to right; where the pattern holds several
  numbers and every checkpoint stores its step (Trainer's ``trainer_state.json`` ``global_step``, a
  ``step`` or ``global_step`` entry), by that step instead: the names alone are ambiguous;
- a name outside that pattern (``last.pt``) is placed among them by the step it stores, else by
  modification time, and the result says so: it never reorders the others.

Complete: what ``verify`` accepts (the data classes a training state pickles, such as numpy RNG
states, allowed), holding at least one tensor, and, for a directory, holding every file that its
next older complete sibling holds (a save killed after the weights leaves the optimizer out). Never
returned: a symlink that leaves the directory or points back at it, a Trainer staging directory.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..formats import verify
from ..formats.data_classes import with_data_classes
from ..formats.hf_dir import STAGING_NAME, global_step, is_trainer_checkpoint
from ..formats.objects import read_objects
from ..formats.registry import CHECKPOINT_SUFFIXES

_NUMBER = re.compile(r"\d+")
#: the entries a training checkpoint stores its step under, most specific first
STEP_KEYS = ("global_step", "step", "iteration", "iter_num")


@dataclass
class LatestComplete:
    """``path``: the newest complete checkpoint (``None`` when there is none); ``skipped``: the
    newer candidates passed over, newest first, each with why; ``order``: how newest was decided
    where the names alone do not say it (empty when they do)."""

    directory: Path
    path: Path | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    order: str = ""

    def __bool__(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        head = (f"{self.path}: the newest complete checkpoint in {self.directory}" if self.path
                else f"{self.directory}: no complete checkpoint")
        lines = [head] + [f"  skipped {p.name}: {why}" for p, why in self.skipped]
        return "\n".join(lines + ([f"  order: {self.order}"] if self.order else []))

    def to_dict(self) -> dict:
        return {"directory": str(self.directory), "path": str(self.path) if self.path else None,
                "skipped": [{"path": str(p), "why": why} for p, why in self.skipped], "order": self.order}


class Candidate:
    """One entry of the directory, with what ordering it needs (read only when asked)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        stem = _stem(path.name)  # step-300 (a directory) and step-200.pt share one pattern
        self.numbers = tuple(int(n) for n in _NUMBER.findall(stem))
        self.pattern = _NUMBER.sub("#", stem)

    @cached_property
    def mtime(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return 0

    @cached_property
    def step(self) -> int | None:
        """The step the checkpoint itself records, or ``None``."""
        return stored_step(self.path)


def _stem(name: str) -> str:
    """The name as its pattern counts it: no checkpoint suffix, no Trainer staging prefix."""
    if STAGING_NAME.fullmatch(name):
        return name[len("tmp-"):]
    for suffix in (*CHECKPOINT_SUFFIXES, ".safetensors.index.json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def stored_step(path: Path) -> int | None:
    """The step a checkpoint records: ``trainer_state.json``'s ``global_step`` for a Trainer
    directory, else a top-level ``global_step``/``step``/``iteration``/``iter_num`` integer of a
    torch file (read as ``verify`` reads it: nothing runs)."""
    if path.is_dir():
        return global_step(path)
    try:
        tree = read_objects(path, meta=True).tree
    except CheckpointError:
        return None
    if isinstance(tree, dict):
        for key in STEP_KEYS:
            value = tree.get(key)
            if type(value) is int and value >= 0:
                return value
    return None


def candidates(directory: Path, pattern: str | None) -> list[Path]:
    """The entries of ``directory`` that may be checkpoints (in no particular order).

    Without ``pattern``: every directory and every file with a checkpoint suffix, hidden names
    (temporary files of an atomic save) left out, and only the checkpoint directories of a
    Trainer's output directory; with it, the names that match it.
    """
    try:
        names = os.listdir(directory)
    except OSError as e:
        kind = "not-found" if isinstance(e, FileNotFoundError) else "unreadable"
        raise CheckpointError(directory, kind, e.strerror or str(e)) from None
    if pattern is not None:
        return [directory / n for n in names if fnmatch.fnmatch(n, pattern)]
    found = [directory / n for n in names if not n.startswith(".")
             and ((directory / n).is_dir() or n.endswith(CHECKPOINT_SUFFIXES))]
    trainer = [p for p in found if p.is_dir() and is_trainer_checkpoint(p, _listing(p))]
    return trainer or found


def _listing(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def newest_first(paths: list[Path]) -> tuple[list[Path], str]:
    """``paths`` newest first, and how that order was decided where the names alone do not say it."""
    cands = [Candidate(p) for p in paths]
    groups: dict[str, list[Candidate]] = {}
    for c in cands:
        if c.numbers:
            groups.setdefault(c.pattern, []).append(c)
    if not groups:
        ordered = sorted(cands, key=lambda c: (c.mtime, c.path.name), reverse=True)
        return [c.path for c in ordered], ("by modification time: no name holds a number" if len(cands) > 1 else "")
    main = max(groups.values(), key=len)
    notes = []
    if len(main[0].numbers) > 1 and len(main) > 1 and all(c.step is not None for c in main):
        main.sort(key=lambda c: (c.step, c.numbers, c.mtime), reverse=True)
        notes.append(f"by the step each checkpoint stores: names like {main[0].path.name} hold several numbers")
    else:
        main.sort(key=lambda c: (c.numbers, c.mtime), reverse=True)
    others = [c for c in cands if c not in main]
    if others:
        others.sort(key=lambda c: (c.step if c.step is not None else -1, c.mtime), reverse=True)
        shown = ", ".join(c.path.name for c in others[:3]) + (" ..." if len(others) > 3 else "")
        notes.append(f"{shown} placed by the step {'it stores' if len(others) == 1 else 'they store'}, "
                     f"else by modification time: outside the pattern {main[0].pattern}")
    return [c.path for c in _merge(main, others)], "; ".join(notes)


def _merge(main: list[Candidate], others: list[Candidate]) -> list[Candidate]:
    """Two newest-first lists as one, each keeping its own order: an entry of ``others`` goes before
    the first of ``main`` it is newer than (by stored step where both have one, else by mtime)."""
    out: list[Candidate] = []
    i = 0
    for m in main:
        while i < len(others) and _newer(others[i], m):
            out.append(others[i])
            i += 1
        out.append(m)
    return out + others[i:]


def _newer(a: Candidate, b: Candidate) -> bool:
    if a.step is not None and b.step is not None and a.step != b.step:
        return a.step > b.step
    return a.mtime > b.mtime


def latest_complete(directory: str | os.PathLike, pattern: str | None = None) -> LatestComplete:
    """The newest complete entry of ``directory``, with the newer ones it skipped and why."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(directory, "not-found" if not directory.exists() else "unreadable",
                              "latest_complete needs the directory that holds the checkpoints")
    ordered, order = newest_first(candidates(directory, pattern))
    problems: dict[Path, str | None] = {}

    def problem(path: Path) -> str | None:
        if path not in problems:
            problems[path] = _problem(directory, path)
        return problems[path]

    skipped: list[tuple[Path, str]] = []
    for i, path in enumerate(ordered):
        why = problem(path) or _missing_beside(path, ordered[i + 1:], problem)
        if why is None:
            return LatestComplete(directory, path, skipped, order)
        skipped.append((path, why))
    return LatestComplete(directory, None, skipped, order)


def _problem(directory: Path, path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint of ``directory``, or ``None``."""
    outside = _leaves(directory, path)
    if outside:
        return outside
    try:
        with_data_classes(verify, path)
        if not _holds_tensors(path):
            return "not-a-checkpoint: it holds no tensor (an empty save)"
    except CheckpointError as exc:
        return f"{exc.kind}: {exc.cause}" + (f" ({_inner(exc, path)})" if _inner(exc, path) else "")
    return None


def _inner(exc: CheckpointError, path: Path) -> str | None:
    """The file inside a directory that its error is about, where the cause does not name it."""
    if exc.path is None or not path.is_dir() or Path(exc.path) == path:
        return None
    name = Path(exc.path).name
    return None if name in exc.cause else name


def _leaves(directory: Path, path: Path) -> str | None:
    """Why a symlink candidate is not the directory's own checkpoint, or ``None``."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
        home = directory.resolve(strict=True)
    except (OSError, RuntimeError):  # a loop, or a link to nothing: verify says which
        return None
    if target == home or home.is_relative_to(target):
        return f"not-a-checkpoint: a symlink to {os.readlink(path)}, the directory itself (or above it)"
    if not target.is_relative_to(home):
        return f"not-a-checkpoint: a symlink to {target}, outside {directory}: never returned"
    return None


def _holds_tensors(path: Path) -> bool:
    """At least one tensor in what the checkpoint holds (metadata only)."""
    from .. import formats

    tree = with_data_classes(formats.read, path, meta=True).tree
    return _any_tensor(tree, 0)


def _any_tensor(tree: Any, depth: int) -> bool:
    if isinstance(tree, torch.Tensor):
        return True
    if depth > 8:
        return False
    if isinstance(tree, dict):
        return any(_any_tensor(v, depth + 1) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(_any_tensor(v, depth + 1) for v in tree)
    return False


def _missing_beside(path: Path, older: list[Path], problem) -> str | None:
    """For a directory: the files its next older complete sibling holds and it lacks."""
    if not path.is_dir():
        return None
    sibling = next((p for p in older if p.is_dir() and problem(p) is None), None)
    if sibling is None:
        return None
    missing = sorted(_files(sibling) - _files(path))
    if not missing:
        return None
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    return (f"incomplete: {shown} {'is' if len(missing) == 1 else 'are'} absent, which {sibling.name} "
            f"holds: a save killed before it wrote {'it' if len(missing) == 1 else 'them'}")


def _files(directory: Path) -> set[str]:
    return {n for n in _listing(directory) if not n.startswith(".") and (directory / n).is_file()}
