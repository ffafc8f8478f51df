"""A diff as JSON for tools: everything it holds, ``json.dumps(..., allow_nan=False)``-ready."""

from __future__ import annotations

from ..compare.diff import Diff
from ..formats.jsonable import jsonable
from .text import counts, render

__all__ = ["diff_to_dict"]


def diff_to_dict(diff: Diff) -> dict:
    """Every field of the diff, JSON-ready, with the text report under ``"report"``."""
    def pair(e, a):
        return {"expected": jsonable(e), "actual": jsonable(a)}

    return {
        "ok": diff.ok,
        "expected": diff.expected,
        "actual": diff.actual,
        "counts": counts(diff),
        "missing": list(diff.missing),
        "unexpected": list(diff.unexpected),
        "expected_missing": list(diff.expected_missing),
        "shape": {n: pair(e, a) for n, (e, a) in diff.shape.items()},
        "dtype": {n: pair(e, a) for n, (e, a) in diff.dtype.items()},
        "values": {n: jsonable(v) for n, v in diff.values.items()},
        "values_compared": diff.values_compared,
        "ties": [list(g) for g in diff.ties],
        "tie_copies": [{"names": list(g), "max_abs_diff": jsonable(d), "kept": kept}
                       for g, (d, kept) in diff.tie_copies.items()],
        "config": {k: pair(e, a) for k, (e, a) in diff.config.items()},
        "config_strict": diff.config_strict,
        "notes": [n.to_dict() for n in diff.notes],
        "expected_info": jsonable(diff.expected_info),
        "actual_info": jsonable(diff.actual_info),
        "report": render(diff),
    }
