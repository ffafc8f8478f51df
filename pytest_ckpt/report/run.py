"""The machine-readable report of a run (``--ckpt-report=PATH``): every round trip, resume check and
snapshot check."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..formats.atomic import atomic_write_text

REPORT_FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def record(kind: str, *, variation: str | None = None, outcome: str, duration: float,
           diff: dict | None = None, message: str = "", path: str | None = None,
           resume: dict | None = None, interrupted: dict | None = None) -> dict[str, Any]:
    """One check's record; JSON-ready. A resume check (kind ``"resume"``) carries its report's
    ``to_dict()`` under ``"resume"`` (``None`` when it was skipped before a report was made); an
    ``interrupted`` round trip its ``InterruptedReport.to_dict()`` under ``"interrupted"``."""
    entry = {
        "kind": kind,  # "roundtrip" | "resume" | "snapshot"
        "variation": variation,
        "outcome": outcome,
        "duration": round(duration, 6),
        "diff": diff,
        "message": message,
        "path": path,
    }
    if kind == "resume":
        entry["resume"] = resume
    if interrupted is not None:
        entry["interrupted"] = interrupted
    return entry


def diff_cause(diff: dict | None) -> str:
    """``[kind] text`` of a recorded diff's first cause (informational notes never lead); ``""`` when none.

    >>> diff_cause({"notes": [{"kind": "prefix", "text": "stripped", "info": True}, {"kind": "shape", "text": "w"}]})
    '[shape] w'
    """
    if not diff:
        return ""
    for note in diff.get("notes", []):
        if not note.get("info"):
            return f"[{note['kind']}] {note['text']}"[:300]
    return ""


def as_dict(report: Any) -> dict | None:
    """``report.to_dict()`` for a record, or ``None``: the record is a courtesy, never a failure."""
    if report is None:
        return None
    try:
        return report.to_dict()
    except Exception:  # noqa: BLE001 - the record is a courtesy; never fail a check over it
        return None


def document(entries: list[dict], *, started: float, workers: int) -> dict:
    """The whole report: one entry per check, sorted by test id for stable output; with
    ``"interrupted"``, the kills of every ``interrupted`` round trip counted by outcome."""
    entries = sorted(entries, key=lambda e: (e["test"], e.get("kind") or "", e.get("variation") or ""))
    summary: dict[str, int] = {}
    for e in entries:
        summary[e["outcome"]] = summary.get(e["outcome"], 0) + 1
    doc = {
        "format_version": REPORT_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration": round(time.time() - started, 3),
        "workers": workers,
        "summary": summary,
        "checks": entries,
    }
    kills = interrupted_counts(entries)
    if kills is not None:
        doc["interrupted"] = kills
    return doc


def interrupted_counts(entries: list[dict]) -> dict | None:
    """The kills of every ``interrupted`` round trip in ``entries``, by outcome (pass, hard fail, silent
    divergence, lost work), and how many checks made them; ``None`` when none ran.

    >>> interrupted_counts([{"interrupted": {"counts": {"pass": 2, "hard fail": 1}}}, {"interrupted": None}, {}])
    {'checks': 1, 'kills': {'pass': 2, 'hard fail': 1}}
    """
    found = [e["interrupted"] for e in entries if e.get("interrupted")]
    if not found:
        return None
    kills: dict[str, int] = {}
    for report in found:
        for outcome, n in report.get("counts", {}).items():
            kills[outcome] = kills.get(outcome, 0) + n
    return {"checks": len(found), "kills": kills}


def write(path: Path, doc: dict) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
