"""Tensor contents: dtypes, values, and tied weights stored apart."""

from __future__ import annotations

from collections import defaultdict

from ...checkpoint.notes import Note
from ...formats.dtypes import dtype_name
from .context import SHOW, listing, plural, runs, verb



def dtype(diff, expected, actual, ctx) -> list[Note]:
    """Dtype differences, one note per (checkpoint dtype, model dtype)."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name, (e, a) in diff.dtype.items():
        groups[e, a].append(name)
    notes = []
    for (e, a), names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        en, an = dtype_name(e), dtype_name(a)
        where = f" ({runs(names, ctx.expected_blocks)})" if len(names) <= SHOW else ""
        notes.append(Note(
            "dtype",
            f"{plural(len(names), 'tensor')} {verb(len(names), 'is', 'are')} {an} in "
            f"the {ctx.noun}, {en} in the model{where}",
            fix=f"save from the model in {en} (model.to(torch.{en}) before saving), or build "
                f"the model in {an}",
            names=tuple(names)))
    return notes


def values(diff, expected, actual, ctx) -> list[Note]:
    """Tensors of the same shape and dtype whose values differ."""
    if not diff.values:
        return []
    worst = max(diff.values, key=lambda n: diff.values[n])
    d = diff.values[worst]
    how = (f"atol={ctx.atol:g}, rtol={ctx.rtol:g}" if ctx.atol or ctx.rtol
           else "compared exactly")
    size = "bits only, e.g. -0.0 vs 0.0" if d == 0 else f"largest max-abs difference {d:.3g}"
    n = len(diff.values)
    return [Note(
        "values",
        f"{plural(n, 'tensor')} {verb(n, 'differs', 'differ')} in value ({how}): {size} at {worst}",
        fix="the checkpoint holds other weights than the model: re-save from this model, or "
            "pass atol=/rtol= if small numeric drift is expected",
        names=tuple(sorted(diff.values)))]


def tied(diff, expected, actual, ctx) -> list[Note]:
    """Tie groups of the model that the checkpoint stores as separate tensors."""
    broken = [g for g in diff.ties if g not in diff.tie_copies]  # those speak for themselves
    if not broken:
        return []
    groups = [" = ".join(g) for g in broken]
    return [Note(
        "tied",
        f"{plural(len(groups), 'tie group')} broken: {listing(groups, 2)} share one tensor "
        f"in the model but are separate in the {ctx.noun}",
        fix="save with torch.save or pc.save (both keep sharing), or re-tie after loading "
            "(e.g. model.tie_weights())",
        names=tuple(n for g in broken for n in g))]


def tied_copies(diff, expected, actual, ctx) -> list[Note]:
    """Tie groups the checkpoint stores as copies whose values differ: a load keeps one of them."""
    notes = []
    for group, (worst, kept) in diff.tie_copies.items():
        dropped = [n for n in group if n != kept]
        notes.append(Note(
            "tied",
            f"{' = '.join(group)}: one tensor in the model, but the {ctx.noun} stores copies "
            f"that differ (largest max-abs difference {worst:.3g}): load_state_dict keeps "
            f"{kept} (loaded last) and drops {listing(dropped, 2)}",
            fix="save tied weights as one tensor (torch.save(model.state_dict()) and pc.save keep "
                "the sharing), or find which copy training updated",
            names=group))
    return notes
