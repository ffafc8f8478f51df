"""Tensor contents: dtypes, values, and tied weights stored apart."""

from __future__ import annotations

from collections import defaultdict

from ...checkpoint.notes import Note
from ...formats.dtypes import dtype_name
from .context import SHOW, by_side, listing, plural, runs, verb



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
            f"the {ctx.noun}, {en} in the {ctx.model}{where}",
            fix=by_side(ctx, f"save from the model in {en} (model.to(torch.{en}) before saving), "
                             f"or build the model in {an}; a cast made on purpose is declared "
                             f"with pc.load_into(..., dtype=torch.{an})",
                        load=f"your load casts them to {ctx.wrong(en, an)} (.half(), .to(), a "
                             f"torch_dtype=): keep {ctx.right(en, an)}, or declare the cast once "
                             f"with ckpt.roundtrip(..., dtype=torch.{ctx.wrong(en, an)})",
                        save=f"your save casts them to {an}: save the model's {en} tensors, or "
                             f"declare the cast once with ckpt.roundtrip(..., dtype=torch.{an})"),
            names=tuple(names)))
    return notes


_LOAD_VALUES_FIX = ("the checkpoint holds the saved values: your load does not load them as saved "
                    "(a strict=False load that matched no names, a model built after loading, "
                    "or a change after loading)")


def dataless(diff, expected, actual, ctx) -> list[Note]:
    """Tensors saved without data (meta tensors): nothing to load, nothing equal to compare."""
    if not diff.dataless:
        return []
    n = len(diff.dataless)
    sides = [v.label for v in (expected, actual) if v.dataless]
    return [Note(
        "incomplete",
        f"{plural(n, 'tensor')} in {' and '.join(sides)} {verb(n, 'holds', 'hold')} no data (saved as "
        f"meta tensors): {listing(diff.dataless, 3)}",
        fix="save the tensors after they are materialized (model.to_empty(device=...) and "
            "initialize or load them; a model built on device='meta' holds shapes only)",
        names=tuple(diff.dataless))]


def values(diff, expected, actual, ctx) -> list[Note]:
    """Tensors of the same shape and dtype whose values differ."""
    found = {n: d for n, d in diff.values.items() if n not in ctx.explained}
    if not found:  # none, or each explained by a more specific rule (a no-op adapter)
        return []
    worst = max(found, key=lambda n: found[n])
    d = found[worst]
    how = (f"atol={ctx.atol:g}, rtol={ctx.rtol:g}" if ctx.atol or ctx.rtol
           else "compared exactly")
    size = "bits only, e.g. -0.0 vs 0.0" if d == 0 else f"largest max-abs difference {d:.3g}"
    n = len(found)
    return [Note(
        "values",
        f"{plural(n, 'tensor')} {verb(n, 'differs', 'differ')} in value ({how}): {size} at {worst}",
        fix=by_side(ctx, "the checkpoint holds other weights than the model: re-save from this "
                         "model, or pass atol=/rtol= if small numeric drift is expected",
                    load=_LOAD_VALUES_FIX,
                    save="your save writes other values than the model it is given holds (a copy "
                         "taken earlier, or a lossy cast): save model.state_dict() as it is"),
        names=tuple(sorted(found)))]


def tied(diff, expected, actual, ctx) -> list[Note]:
    """Tie groups of the model that the checkpoint stores as separate tensors."""
    broken = [g for g in diff.ties if g not in diff.tie_copies]  # those speak for themselves
    if not broken:
        return []
    groups = [" = ".join(g) for g in broken]
    return [Note(
        "tied",
        f"{plural(len(groups), 'tie group')} broken: {listing(groups, 2)} share one tensor "
        f"in the {ctx.model} but are separate in the {ctx.noun}",
        fix=by_side(ctx, "save with torch.save or pc.save (both keep sharing), or re-tie after "
                         "loading (e.g. model.tie_weights())",
                    load="your load must re-tie them after loading (e.g. model.tie_weights())",
                    save="your save must keep the sharing: torch.save(model.state_dict()) or "
                         "pc.save keep it, a copy per name ({k: v.clone()}) does not"),
        names=tuple(n for g in broken for n in g))]


def tied_copies(diff, expected, actual, ctx) -> list[Note]:
    """Tie groups the checkpoint stores as copies whose values differ: a load keeps one of them."""
    notes = []
    for group, (worst, kept) in diff.tie_copies.items():
        dropped = [n for n in group if n != kept]
        notes.append(Note(
            "tied",
            f"{' = '.join(group)}: one tensor in the {ctx.model}, but the {ctx.noun} stores copies "
            f"that differ (largest max-abs difference {worst:.3g}): load_state_dict keeps "
            f"{kept} (loaded last) and drops {listing(dropped, 2)}",
            fix=by_side(ctx, "save tied weights as one tensor (torch.save(model.state_dict()) and "
                             "pc.save keep the sharing), or find which copy training updated",
                        load="copies that differ are in the file your save wrote: fix the save "
                             "(keep tied weights one tensor), not the load",
                        save="your save must keep the sharing: torch.save(model.state_dict()) or "
                             "pc.save keep it, a copy per name does not"),
            names=group))
    return notes
