"""Name patterns (``expect_missing=``, ``only=``) and a side of a comparison cut down to them.

A pattern is a glob (``fnmatch``, case-sensitive, ``*`` crosses dots) matched against the
canonical name; it also covers everything under a module it names, so ``"text_projection"``
covers ``text_projection.weight``.
"""

from __future__ import annotations

import dataclasses
from fnmatch import fnmatchcase
from typing import Iterable

from .notes import Note
from .schema import Schema
from .view import View

__all__ = ["as_patterns", "matching", "restrict"]


def as_patterns(patterns: str | Iterable[str]) -> list[str]:
    """``"proj"`` is one pattern, not four letters."""
    return [patterns] if isinstance(patterns, str) else list(patterns)


def matching(names: Iterable[str], patterns: str | Iterable[str]) -> list[str]:
    """The names (in their order) that one of ``patterns`` covers.

    >>> matching(["proj.weight", "layers.0.lora_A.weight", "head.bias"], ["proj", "*.lora_*"])
    ['proj.weight', 'layers.0.lora_A.weight']
    """
    globs = [p for pattern in as_patterns(patterns) for p in (pattern, f"{pattern}.*")]
    return [n for n in names if any(fnmatchcase(n, g) for g in globs)]


def restrict(expected: View, actual: View, patterns: str | Iterable[str]) -> tuple[View, View]:
    """Both sides with only the names ``patterns`` cover (``only=``: compare an adapter, not the
    frozen base it sits on); one info note says how many of each were kept. Patterns that
    cover no name on either side raise ``ValueError``: comparing nothing would pass anything."""
    patterns = as_patterns(patterns)
    sides = [(view, matching(view.tensors, patterns)) for view in (expected, actual)]
    if not any(kept for _, kept in sides):
        raise ValueError(f"only={patterns!r} matches no tensor of {expected.label} nor of "
                         f"{actual.label}: nothing would be compared")
    counts = " and ".join(f"{len(kept)} of {len(view.tensors)} tensors of {view.label}"
                          for view, kept in sides)
    note = Note("only", f"only={patterns!r}: compared {counts}", info=True)
    (e, ek), (a, ak) = sides
    return _cut(e, ek, []), _cut(a, ak, [note])


def _cut(view: View, kept: list[str], notes: list[Note]) -> View:
    chosen = set(kept)
    tensors = {n: view.tensors[n] for n in kept}
    ties = None if view.ties is None else [
        g for g in (tuple(n for n in group if n in chosen) for group in view.ties) if len(g) > 1]
    return dataclasses.replace(
        view,
        schema=Schema.of(tensors, located_at=view.schema.located_at, stripped=view.schema.stripped),
        tensors=tensors,
        ties=ties,
        notes=[*view.notes, *notes],
    )
