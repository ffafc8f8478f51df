"""A resume report as text for a person at a CI log: verdict first, one line per cause, then what was
compared. Duck-typed: it reads a ``ResumeReport``'s attributes (the resume layer sits above this one).
"""

from __future__ import annotations

from typing import Any

#: causes shown per resume point before "... and N more"
MAX_CAUSES = 12
#: component paths named on the "compared" line
MAX_NAMES = 8


def render(report: Any) -> str:
    """The report of a resume check, fitting a screen.

    >>> from types import SimpleNamespace as NS
    >>> point = NS(at=3, ok=False, notes=[NS(kind="resume-counter", text="run.step is 0 after load (uninterrupted: 3)",
    ...            fix="save run.step with the checkpoint and set it back in your load")],
    ...            divergence={"step": 4, "what": "loss", "expected": 0.9031, "actual": 0.9123})
    >>> print(render(NS(ok=False, points=[point], steps=6, atol=0.0, rtol=0.0,
    ...                 compared={"run.model": "module", "run.step": "counter"}, not_compared={})))
    resume after step 3 differs from the uninterrupted run from step 4: loss 0.9123 resumed vs 0.9031 uninterrupted
      [resume-counter] run.step is 0 after load (uninterrupted: 3); fix: save run.step with the checkpoint and set it back in your load
      compared: run.model, run.step (2 components, right after load and after step 6; losses of every step, bitwise)
    """
    lines = []
    how = _how(report)
    if report.ok:
        ats = _ats([p.at for p in report.points])
        n = len(report.compared)
        lines.append(f"ok: resume after {ats} matches the uninterrupted run ({report.steps} steps, losses {how}, "
                     f"{n} component{'s' if n != 1 else ''} compared)")
    else:
        for point in report.points:
            if point.ok:
                lines.append(f"resume after step {point.at}: ok")
                continue
            lines.append(_verdict(point))
            for note in point.notes[:MAX_CAUSES]:
                fix = f"; fix: {_line(note.fix)}" if note.fix else ""
                lines.append(f"  [{note.kind}] {_line(note.text)}{fix}")
            if len(point.notes) > MAX_CAUSES:
                lines.append(f"  ... and {len(point.notes) - MAX_CAUSES} more causes (report.to_dict() has all)")
        names = list(report.compared)
        shown = ", ".join(names[:MAX_NAMES]) + (", ..." if len(names) > MAX_NAMES else "")
        when = f"load and after step {report.steps}" if getattr(report, "final_compared", True) else "load"
        lines.append(f"  compared: {shown} ({len(names)} component{'s' if len(names) != 1 else ''}, right after "
                     f"{when}; losses of every step, {how})")
    if report.not_compared:
        lines.append("  not compared: " + "; ".join(f"{what} ({why})" for what, why in report.not_compared.items()))
    return "\n".join(lines)


def _verdict(point: Any) -> str:
    head = f"resume after step {point.at} differs from the uninterrupted run"
    d = point.divergence
    if d is None:
        return head
    step, what = d["step"], d["what"]
    if what == "loss":
        return f"{head} from step {step}: loss {_pair(d['actual'], d['expected'])}"
    if what == "batch":
        return (f"{head} from step {step}: it trains on another batch "
                f"(loss {_pair(d['actual'], d['expected'])})")
    return f"{head} after step {step}: {what} differs (the losses match)"


def _pair(actual: float, expected: float) -> str:
    # as many digits as it takes to tell the two apart: a bitwise difference may sit in the 7th
    for digits in range(4, 18):
        a, e = f"{actual:.{digits}g}", f"{expected:.{digits}g}"
        if a != e:
            break
    return f"{a} resumed vs {e} uninterrupted"


def _how(report: Any) -> str:
    if report.atol or report.rtol:
        return f"within atol={report.atol:g}, rtol={report.rtol:g}"
    return "bitwise"


def _ats(ats: list[int]) -> str:
    if len(ats) == 1:
        return f"step {ats[0]}"
    return "steps " + ", ".join(str(a) for a in ats[:-1]) + f" and {ats[-1]}"


def _line(text: str) -> str:
    return " ".join(str(text).split())
