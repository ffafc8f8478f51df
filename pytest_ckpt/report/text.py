"""A diff as text for a person at a CI log: the verdict, one line per cause, what was normalized."""

from __future__ import annotations

from ..compare.diff import Diff
from ..formats.dtypes import dtype_name

__all__ = ["render", "counts"]

#: problem notes shown before "N more causes" (each takes two lines)
MAX_CAUSES = 14
#: info notes shown
MAX_INFO = 5


def counts(diff: Diff) -> dict[str, int]:
    """How many of each kind of difference (config only when it counts)."""
    out = {
        "missing": len(diff.missing), "unexpected": len(diff.unexpected),
        "shape": len(diff.shape), "dtype": len(diff.dtype), "values": len(diff.values),
        "ties": len(diff.ties), "config": len(diff.config) if diff.config_strict else 0,
    }
    return out


def render(diff: Diff, verbose: bool = False) -> str:
    """The report: the verdict first, then one line per cause with its fix, then what
    was normalized (prefixes stripped, where the weights were found).

    Stays under ~40 lines unless ``verbose``, which appends every name.

    >>> print(render(Diff("model", "ckpt.pt", expected_info={"tensors": 3})))
    ok: 3 tensors match in name, shape and dtype (values not compared)
    """
    problems = [n for n in diff.notes if not n.info]
    infos = [n for n in diff.notes if n.info]
    lines = [_verdict(diff, problems)]
    shown = problems if verbose else problems[:MAX_CAUSES]
    last_fix = ""
    for note in shown:
        lines.append(f"  [{note.kind}] {_one_line(note.text)}")
        if note.fix and note.fix != last_fix:  # a run of one cause's patterns shares its fix
            lines.append(f"      fix: {_one_line(note.fix)}")
        last_fix = note.fix
    if len(shown) < len(problems):
        lines.append(f"  ... and {len(problems) - len(shown)} more causes "
                     "(report(verbose=True) or --json for all)")
    shown_infos = infos if verbose else infos[:MAX_INFO]
    for note in shown_infos:
        lines.append(f"  [{note.kind}] {_one_line(note.text)}")
    if len(shown_infos) < len(infos):
        lines.append(f"  ... and {len(infos) - len(shown_infos)} more notes")
    if verbose:
        lines.extend(_every_name(diff))
    return "\n".join(lines)


def _verdict(diff: Diff, problems) -> str:
    if diff.ok:
        n = diff.expected_info.get("tensors", diff.actual_info.get("tensors", 0))
        n -= len(diff.expected_missing)  # absent by design: they matched nothing
        if diff.values_compared:
            how = (f"match within atol={diff.atol:g}, rtol={diff.rtol:g}"
                   if diff.atol or diff.rtol else "match exactly")
            text = f"ok: {n} tensors {how}"
        else:
            text = f"ok: {n} tensors match in name, shape and dtype (values not compared)"
        normalized = _normalized(diff)
        return f"{text} ({normalized})" if normalized else text
    words = {"values": ("value", "values"), "ties": ("tie broken", "ties broken")}
    parts = [f"{v} {words.get(k, (k, k))[v != 1]}" for k, v in counts(diff).items() if v]
    if diff.dataless:
        parts.append(f"{len(diff.dataless)} without data")
    causes = len(problems)
    # a checkpoint is checked against the model; against a snapshot, the model is what changed
    changed, reference = ((diff.expected, diff.actual) if diff.actual_info.get("format") == "snapshot"
                          else (diff.actual, diff.expected))
    return (f"{changed} differs from {reference}: {', '.join(parts)} "
            f"({causes} {'cause' if causes == 1 else 'causes'})")


def _normalized(diff: Diff) -> str:
    """What was undone to compare, from the side infos: stripped prefixes, location."""
    bits = []
    for info in (diff.actual_info, diff.expected_info):
        stripped = info.get("stripped") or []
        if stripped:
            bits.append("stripped " + ", ".join(stripped))
        located = info.get("located_at") or []
        if located:
            bits.append("found at " + ".".join(str(p) for p in located))
    return "; ".join(dict.fromkeys(bits))


#: a note longer than this is cut (notes are built short; this guards odd names)
MAX_LINE = 400


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LINE else text[:MAX_LINE - 3] + "..."


def _every_name(diff: Diff) -> list[str]:
    out = []
    if diff.missing:
        out.append(f"missing ({len(diff.missing)}):")
        out += [f"  {n}" for n in diff.missing]
    if diff.unexpected:
        out.append(f"unexpected ({len(diff.unexpected)}):")
        out += [f"  {n}" for n in diff.unexpected]
    if diff.shape:
        out.append(f"shape ({len(diff.shape)}): model vs checkpoint")
        out += [f"  {n}: {list(e)} vs {list(a)}" for n, (e, a) in sorted(diff.shape.items())]
    if diff.dtype:
        out.append(f"dtype ({len(diff.dtype)}): model vs checkpoint")
        out += [f"  {n}: {dtype_name(e)} vs {dtype_name(a)}" for n, (e, a) in sorted(diff.dtype.items())]
    if diff.values:
        out.append(f"values ({len(diff.values)}): max abs difference")
        out += [f"  {n}: {v:.6g}" for n, v in sorted(diff.values.items())]
    if diff.ties:
        out.append(f"ties broken ({len(diff.ties)}):")
        out += [f"  {' = '.join(g)}" for g in diff.ties]
    if diff.config:
        out.append(f"config ({len(diff.config)}): model vs checkpoint")
        out += [f"  {k}: {e!r} vs {a!r}" for k, (e, a) in sorted(diff.config.items())]
    return out
