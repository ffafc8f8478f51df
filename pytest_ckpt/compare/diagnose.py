"""Explain a diff: one :class:`~pytest_ckpt.checkpoint.notes.Note` per cause, from the rules
in :mod:`pytest_ckpt.compare.rules` (one module per family of causes)."""

from __future__ import annotations

from ..checkpoint.notes import Note
from ..checkpoint.view import View
from .diff import Diff
from .ranges import index_blocks
from .rules import RULES, Context, Rule

__all__ = ["Context", "Rule", "RULES", "diagnose"]


def diagnose(diff: Diff, expected: View, actual: View, ctx: Context) -> list[Note]:
    """Run every rule of :data:`RULES` in order; the notes they return, concatenated."""
    if diff.missing or diff.unexpected or diff.shape or diff.dtype:
        # only names need block structure; an ok diff of a huge schema skips the walk
        ctx.expected_blocks = index_blocks(expected.schema)
        ctx.actual_blocks = index_blocks(actual.schema)
    notes: list[Note] = []
    for rule in RULES:
        notes.extend(rule(diff, expected, actual, ctx))
    return notes
