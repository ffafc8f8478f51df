"""Names: renamed keys, and names on one side only that no other rule explains."""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import Counter, defaultdict
from typing import Iterator

from ...checkpoint.notes import Note
from .context import by_side, listing, plural, runs, verb



def renamed(diff, expected, actual, ctx) -> list[Note]:
    """Missing and unexpected names that pair up by a consistent rename of the same shapes."""
    todo = [n for n in diff.missing if n not in ctx.explained]
    unused = {n for n in diff.unexpected if n not in ctx.explained}
    if not todo or not unused:
        return []
    shape_of = {n: actual.schema[n].shape for n in unused}
    by_shape: dict[tuple, list[str]] = defaultdict(list)
    for n in sorted(unused):
        by_shape[shape_of[n]].append(n)
    by_suffix = {shape: sorted((u[::-1], u) for u in names) for shape, names in by_shape.items()}

    def nearby(m: str, shape) -> list[str]:
        # a rename keeps most of a name: its partner sorts near it by prefix or by suffix
        names, ends = by_shape.get(shape, []), by_suffix.get(shape, [])
        i, j = bisect_left(names, m), bisect_left(ends, (m[::-1], ""))
        near = names[max(0, i - 4):i + 4] + [u for _, u in ends[max(0, j - 4):j + 4]]
        return [u for u in near if u in unused]

    def any_same_shape(m: str, shape) -> Iterator[str]:
        return itertools.islice((u for u in by_shape.get(shape, ()) if u in unused), 200)

    def best_rule(partners) -> tuple[tuple, dict[str, str]] | None:
        """The rule, among those turning sampled names into their partners, that pairs the most."""
        candidates: Counter = Counter()
        for m in sample:
            for u in partners(m, expected.schema[m].shape):
                candidates.update(_rename_rules(through[m], u))
        best = None
        for rule, _ in candidates.most_common(20):
            pairs: dict[str, str] = {}
            for m in remaining:
                u = _apply(rule, through[m])
                if u in unused and shape_of[u] == expected.schema[m].shape:
                    pairs[m] = u
            if best is None or len(pairs) > len(best[1]):
                best = (rule, pairs)
        return best

    found: list[tuple[tuple, dict[str, str]]] = []
    remaining = set(todo)
    for _ in range(4):  # a few rules at most (e.g. a prefix, then gamma->weight)
        # rules found so far apply first, so a prefix and a leaf rename can combine
        through = {m: _through([r for r, _ in found], m) for m in remaining}
        sample = sorted(remaining)[:50]
        # the few neighbours first (cheap); all same-shape names when they leave names unpaired
        best = best_rule(nearby)
        if not best or len(best[1]) < len(remaining):
            wide = best_rule(any_same_shape)
            if wide and (not best or len(wide[1]) > len(best[1])):
                best = wide
        if not best or not best[1]:
            break
        found.append(best)
        remaining -= best[1].keys()
        unused -= set(best[1].values())
    if not found:
        return []
    names = [n for _, pairs in found for kv in pairs.items() for n in kv]
    ctx.explained.update(names)
    total = sum(len(p) for _, p in found)
    mapping = listing([f"{_describe(rule)} ({len(p)})" for rule, p in found])
    example = next(iter(sorted(found[0][1].items())))
    return [Note(
        "renamed",
        f"{plural(total, 'tensor')} {verb(total, 'has', 'have')} other names in the {ctx.noun} "
        f"({ctx.model} -> {ctx.noun}): "
        f"{mapping}; e.g. {example[0]} -> {example[1]}",
        fix=by_side(ctx, "rename the keys when loading, or save from a model that uses the same names",
                     load="your load must read the names as training saves them (rename the keys "
                          "when loading)",
                     save="your save must keep the model's own names"),
        names=tuple(sorted(names)))]


def _rename_rules(m: str, u: str) -> list[tuple]:
    """Rules that turn model name ``m`` into checkpoint name ``u``."""
    mp, up = m.split("."), u.split(".")
    rules = []
    k = 0
    while k < min(len(mp), len(up)) and mp[-1 - k] == up[-1 - k]:
        k += 1
    if k:
        p, q = ".".join(mp[:len(mp) - k]), ".".join(up[:len(up) - k])
        rules.append(("prefix", p + "." if p else "", q + "." if q else ""))
    if len(mp) == len(up):
        diffs = [(a, b) for a, b in zip(mp, up) if a != b]
        # block numbers changing is a layer matter, never a rename
        if len(diffs) == 1 and not (diffs[0][0].isdigit() or diffs[0][1].isdigit()):
            rules.append(("part",) + diffs[0])
    return rules


def _through(rules: list[tuple], name: str) -> str:
    for rule in rules:
        name = _apply(rule, name) or name
    return name


def _apply(rule: tuple, name: str) -> str | None:
    if rule[0] == "prefix":
        _, p, q = rule
        return q + name[len(p):] if name.startswith(p) else None
    _, a, b = rule
    parts = name.split(".")
    return ".".join(b if x == a else x for x in parts) if a in parts else None


def _describe(rule: tuple) -> str:
    kind, a, b = rule
    if kind == "part":
        return f"`.{a}` -> `.{b}`"
    if not a:
        return f"prefix `{b}` added"
    if not b:
        return f"prefix `{a}` removed"
    return f"`{a}` -> `{b}`"


def missing(diff, expected, actual, ctx) -> list[Note]:
    """Names the model has and the checkpoint lacks, no other rule explained."""
    names = [n for n in diff.missing if n not in ctx.explained]
    if not names:
        return []
    return [Note(
        "missing",
        f"{plural(len(names), 'tensor')} missing from the {ctx.noun}: "
        f"{runs(names, ctx.expected_blocks)}",
        fix=by_side(ctx, "save the checkpoint from a model that has these modules, or build the "
                          "model without them",
                     load=("your load builds modules training does not save: build the model as "
                           "training does") if ctx.at_fault == "expected" else
                          "your load must build these modules and load them, as training does",
                     save="your save must write them: save the whole model.state_dict() (buffers "
                          "such as BatchNorm's running stats are part of it)"),
        names=tuple(names))]


def unexpected(diff, expected, actual, ctx) -> list[Note]:
    """Names the checkpoint has and the model lacks, no other rule explained."""
    names = [n for n in diff.unexpected if n not in ctx.explained]
    if not names:
        return []
    return [Note(
        "unexpected",
        f"{plural(len(names), 'tensor')} in the {ctx.noun} {verb(len(names), 'has', 'have')} "
        f"no place in the {ctx.model}: "
        f"{runs(names, ctx.actual_blocks)}",
        fix=by_side(ctx, "build the model with these modules, or drop the keys before loading",
                     load="your load must build these modules, as training does"
                          if ctx.at_fault == "expected" else
                          "your load builds modules the saved model does not have: build the "
                          "model as training does",
                     save="your save writes tensors the model does not have: save its "
                          "state_dict() only"),
        names=tuple(names))]
