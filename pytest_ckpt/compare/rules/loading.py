"""Tensors a load never copied: still a freshly built module's values, or every tensor differing
because the load matched none of the file's names (a wrapper prefix it left on)."""

from __future__ import annotations

from collections import defaultdict

import torch

from ...checkpoint.canonical import added_by
from ...checkpoint.notes import Note
from ..values import same
from .context import runs

#: how a load that copies nothing says so: silently, when strict=False
_AUDIT = ("a load_state_dict(..., strict=False) skips every name it does not match without a "
          "word (print what it returns, or run with --ckpt-audit-loads)")


#: what :func:`_as_built` says of a tensor equal to ``View.fresh``'s
FRESH = "as freshly built"


def load_matched_nothing(diff, expected, actual, ctx) -> list[Note]:
    """No tensor of the reloaded side holds the saved values, and every name of the file it was
    loaded from carries a wrapper prefix: the load left the prefix on and matched nothing.

    Needs ``actual.read_from`` (the file the load read, as pytest-ckpt reads it)."""
    file = actual.read_from
    if file is None or not file.schema.stripped or not diff.values_compared or not diff.values:
        return []
    compared = [n for n in expected.schema if n in actual.schema
                and n not in diff.shape and n not in diff.dtype]
    if len(compared) < 2 or any(n not in diff.values for n in compared):
        return []
    prefix = "".join(file.schema.stripped)
    ctx.explained.update(compared)
    return [Note(
        "prefix",
        f"every name in {file.label} starts with {prefix} ({added_by(file.schema.stripped)}) and "
        f"no tensor of the {ctx.noun} holds the {ctx.model}'s values ({len(compared)} differ): "
        f"your load leaves {prefix} on, so it matched no name",
        fix=f"strip {prefix} in your load (torch.nn.modules.utils."
            f"consume_prefix_in_state_dict_if_present, or pc.load_into(model, path), which strips "
            f"any wrapper); {_AUDIT}",
        names=tuple(compared))]


def fresh_init(diff, expected, actual, ctx) -> list[Note]:
    """Tensors one side holds as a freshly built module does (``View.fresh``'s values, or one
    value everywhere, as a norm's weight of 1.0 or a bias of 0.0) while the other side's are
    not: that side never loaded them.

    Only for a side a round trip's code made (``ctx.at_fault``) or one whose fresh values are
    known: elsewhere (two trained models, a resumed run) a tensor at one value is no evidence of
    a load that skipped it."""
    sides = [(side, mine, theirs) for side, mine, theirs in (("actual", actual, expected),
                                                             ("expected", expected, actual))
             if ctx.at_fault == side or mine.fresh is not None]
    if not diff.values_compared or not sides:
        return []
    found: dict[str, list[str]] = defaultdict(list)
    shown: dict[str, list[str]] = defaultdict(list)
    for name in diff.values:
        if name in ctx.explained:
            continue
        for side, mine, theirs in sides:
            value = _as_built(name, mine, theirs)
            if value is not None:
                found[side].append(name)
                shown[side].append(value)
                break
    notes = []
    for side, names in found.items():
        ctx.explained.update(names)
        notes.append(_note(side, names, shown[side], ctx))
    return notes


def _as_built(name: str, mine, theirs) -> str | None:
    """How ``mine``'s tensor shows it was never loaded (its one value, ``"1.0"``, or ``"as freshly
    built"``), else None."""
    t, other = mine.tensors[name], theirs.tensors[name]
    if t.is_meta or other.is_meta:
        return None
    fresh = (mine.fresh or {}).get(name)
    if fresh is not None and fresh.shape == t.shape and fresh.dtype == t.dtype \
            and same(t, fresh):
        return FRESH
    first = _constant(t)
    # the other side moved away from that value at most places (trained), not at a few, and
    # holds no one value of its own (a scale set to 0.5 on purpose tells no init apart)
    if (first is not None and _constant(other) is None
            and 2 * int((other != first).sum()) > other.numel()):
        return repr(first)
    return None


def _constant(t: torch.Tensor) -> float | None:
    # the one value of a tensor of at least two elements that holds nothing else (a norm's 1.0)
    if t.numel() < 2 or t.dtype == torch.bool or t.is_complex():
        return None
    flat = t.detach().reshape(-1)
    first = flat[0]
    return float(first) if bool((flat == first).all()) else None


def _note(side: str, names: list[str], shown: list[str], ctx) -> Note:
    holder, other = (ctx.noun, ctx.model) if side == "actual" else (ctx.model, ctx.noun)
    constants = sorted({v for v in shown if v != FRESH}, key=float, reverse=True)
    how = [f"hold {' or '.join(constants)} everywhere, as freshly built modules do"] if constants else []
    how += ["equal a freshly built model's"] if FRESH in shown else []
    said = f"the {holder}'s {runs(names, ctx.expected_blocks)} {' or '.join(how)}, where the {other}'s do not"
    # in a round trip, the side its code made gets a cause and fix aimed at that code
    code = ctx.fix_side if ctx.at_fault == side else None
    if code == "load":
        return Note("values", f"{said}: your load did not copy them",
                    fix=f"your load must copy them: {_AUDIT}", names=tuple(names))
    if code == "save":
        return Note("values", f"{said}: your save writes a model that never loaded or trained them",
                    fix="your save must write the trained model's state_dict(), after loading or "
                        "training it", names=tuple(names))
    return Note("values", f"{said}: the {holder} never loaded them",
                fix=f"load the weights into the {holder} before comparing (pc.load_into checks "
                    f"every name); {_AUDIT}", names=tuple(names))
