"""Casts seen in the values: a side whose tensors are the other's rounded to float16 or bfloat16
and back (same dtype, so no dtype difference shows it), which side cast them, and the fix."""

from __future__ import annotations

from collections import defaultdict

import torch

from ...checkpoint.notes import Note
from ...formats.dtypes import dtype_name
from ..values import same
from .context import by_side, plural, runs

#: the narrow dtypes a weight is rounded through, with the tolerances that accept that rounding
#: (half an ulp relative: 2**-11 for float16, 2**-8 for bfloat16, with room; float16's
#: subnormals need an absolute one)
ROUNDINGS = {torch.float16: "rtol=1e-3, atol=1e-7", torch.bfloat16: "rtol=8e-3"}


#: how many changed elements, all exactly that rounding, make a cast the cause rather than chance
EVIDENCE = 16
#: elements looked at before a whole tensor is cast
PROBE = 1 << 16


def _elements_changed(names: list[str], expected, actual) -> int:
    total = 0
    for name in names:
        e, a = expected.tensors[name], actual.tensors[name]
        total += int((e != a).sum())
        if total >= EVIDENCE:
            break
    return total


def rounded_to(rounded: torch.Tensor, exact: torch.Tensor) -> torch.dtype | None:
    """The narrow dtype of :data:`ROUNDINGS` such that ``rounded`` is exactly ``exact`` cast to
    it and back, else ``None``: a difference that is that rounding and nothing else.

    >>> x = torch.tensor([0.1, 1/3, 1e-3])
    >>> rounded_to(x.half().float(), x), rounded_to(x.bfloat16().float(), x)
    (torch.float16, torch.bfloat16)
    >>> rounded_to(x + 1e-3, x) is None
    True
    """
    if (not exact.is_floating_point() or exact.is_meta or rounded.is_meta
            or exact.dtype.itemsize <= 2 or rounded.dtype != exact.dtype or rounded.shape != exact.shape):
        return None
    for narrow in ROUNDINGS:
        # the first elements first: a tensor that is not this rounding is told there, before the
        # whole one is cast twice (a 64 MiB weight with one changed element is neither)
        if rounded.is_contiguous() and exact.is_contiguous() and not same(
                rounded.view(-1)[:PROBE], exact.view(-1)[:PROBE].to(narrow).to(exact.dtype)):
            continue
        if same(rounded, exact.to(narrow).to(exact.dtype)):
            return narrow
    return None


def rounded(diff, expected, actual, ctx) -> list[Note]:
    """Tensors whose every difference is the rounding to float16/bfloat16 of the other side's:
    one note per (narrow dtype, side that holds the rounded values)."""
    if not diff.values_compared:
        return []
    groups: dict[tuple[torch.dtype, str], list[str]] = defaultdict(list)
    for name in diff.values:
        if name in ctx.explained:
            continue
        e, a = expected.tensors[name], actual.tensors[name]
        narrow = rounded_to(a, e)
        if narrow is not None:
            groups[narrow, "actual"].append(name)
            continue
        narrow = rounded_to(e, a)
        if narrow is not None:
            groups[narrow, "expected"].append(name)
    notes = []
    for (narrow, side), names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        if _elements_changed(names, expected, actual) < EVIDENCE:
            continue  # a value or two can be a float16/bfloat16 number by chance (1000.0 is one)
        ctx.explained.update(names)
        notes.append(_note(narrow, side, names, expected.tensors[names[0]].dtype, ctx))
    return notes


def _note(narrow: torch.dtype, side: str, names: list[str], wide: torch.dtype, ctx) -> Note:
    low, keep, n = dtype_name(narrow), dtype_name(wide), len(names)
    call = f"{'.half()' if narrow is torch.float16 else '.bfloat16()'} or .to(torch.{low}) and back"
    holder, source = (ctx.noun, ctx.model) if side == "actual" else (ctx.model, ctx.noun)
    where = by_side(ctx, f"a cast to {low} and back between them",
                    load="a cast on the load side", save="a cast on the save side")
    intended = f"or compare with {ROUNDINGS[narrow]} if the rounding is intended"
    return Note(
        "cast",
        f"the {holder}'s values are the {source}'s rounded to {low} ({plural(n, 'tensor')}: "
        f"{runs(names, ctx.expected_blocks)}; every difference is that rounding): {where}",
        fix=by_side(ctx, f"find the {call} between the two and keep the weights in {keep}, "
                         f"{intended}",
                    load=f"your load rounds the weights through {low} ({call}, e.g. a "
                         f"convert_weights() for inference): keep them in {keep}, {intended}",
                    save=f"your save rounds the weights through {low} ({call} before saving): "
                         f"save model.state_dict() as it is, {intended}"),
        names=tuple(names))
