"""Explain a diff: one :class:`Note` per cause, each from a small rule in :data:`RULES`.

A rule is ``rule(diff, expected, actual, ctx) -> list[Note]``; adding a cause
is adding a function to :data:`RULES`. Rules run in order and mark the names
and config fields they explain in ``ctx``, so later, more generic rules
(missing, unexpected, config) only speak about what is left.

Wording: *expected* is the model, *actual* the checkpoint (``ctx.noun``: "snapshot"
when the actual side is a golden schema snapshot); a change is written
``checkpoint value -> model value``.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..checkpoint.configs import ABSENT, flatten, int_fields_equal, layer_field
from ..checkpoint.schema import dtype_name
from ..checkpoint.view import View
from ..checkpoint.notes import Note
from .diff import CheckpointDiff
from .ranges import collapse, format_indices, index_blocks

__all__ = ["Context", "Rule", "RULES", "diagnose"]

#: how many items a one-line list shows before "and N more"
SHOW = 4


@dataclass
class Context:
    """What the rules share: the configs in use, tolerances, and what is explained already."""

    expected_config: dict | None = None
    actual_config: dict | None = None
    atol: float = 0.0
    rtol: float = 0.0
    #: what the notes call the actual side (``View.noun``): "checkpoint", or "snapshot"
    noun: str = "checkpoint"
    #: missing/unexpected names a rule has explained
    explained: set[str] = field(default_factory=set)
    #: config fields a rule has named
    explained_config: set[str] = field(default_factory=set)
    #: {container: {block index: [names]}} per side, filled by :func:`diagnose`
    expected_blocks: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    actual_blocks: dict[str, dict[int, list[str]]] = field(default_factory=dict)


Rule = Callable[[CheckpointDiff, View, View, Context], "list[Note]"]


def diagnose(diff: CheckpointDiff, expected: View, actual: View, ctx: Context) -> list[Note]:
    """Run every rule of :data:`RULES` in order; the notes they return, concatenated."""
    if diff.missing or diff.unexpected or diff.shape or diff.dtype:
        # only names need block structure; an ok diff of a huge schema skips the walk
        ctx.expected_blocks = index_blocks(expected.schema)
        ctx.actual_blocks = index_blocks(actual.schema)
    notes: list[Note] = []
    for rule in RULES:
        notes.extend(rule(diff, expected, actual, ctx))
    return notes


# -- helpers -----------------------------------------------------------------------------

def _block_run(container: str, indices) -> str:
    """``layers.8-15.*``; top-level blocks (an ``nn.Sequential``) read ``8-15.*``."""
    return f"{container}.{format_indices(indices)}.*" if container else f"{format_indices(indices)}.*"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _verb(n: int, singular: str, plural: str) -> str:
    return singular if n == 1 else plural


def _listing(items: list[str], show: int = SHOW) -> str:
    head = ", ".join(items[:show])
    return head if len(items) <= show else f"{head} and {len(items) - show} more"


def _runs(names, blocks=None) -> str:
    return _listing([r.display for r in collapse(names, blocks=blocks)])


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _value(v: Any) -> str:
    return repr(v) if isinstance(v, str) or v is ABSENT else str(v)


def _block_word(indices: list[int]) -> str:
    return f"{'block' if len(indices) == 1 else 'blocks'} {format_indices(indices)}"


def _cfg_get(cfg: dict | None, name: str) -> Any:
    return ABSENT if cfg is None else flatten(cfg).get(name, ABSENT)


def _layer_change(ctx: Context, n_ckpt: int, n_model: int) -> str | None:
    """The config field that sets the block count, when a config shows it."""
    ec, ac = ctx.expected_config, ctx.actual_config
    if n_ckpt == n_model:
        return None
    if ac is not None and ec is not None:
        names = [layer_field(ac), layer_field(ec)]
        names += int_fields_equal(ac, n_ckpt) + int_fields_equal(ec, n_model)
        for name in dict.fromkeys(n for n in names if n):
            if _cfg_get(ac, name) == n_ckpt and _cfg_get(ec, name) == n_model:
                return name
        return None
    # one config known: trust only a field named like a layer count, and only if it agrees
    known, count = (ac, n_ckpt) if ac is not None else (ec, n_model)
    name = layer_field(known)
    return name if name and _cfg_get(known, name) == count else None


# -- rules -------------------------------------------------------------------------------

def incomplete(diff, expected, actual, ctx) -> list[Note]:
    """The checkpoint lacks a tail of blocks its own stored config says it has."""
    cfg = actual.config
    name = layer_field(cfg)
    if not name or not diff.missing:
        return []
    count = _cfg_get(cfg, name)
    missing, unexpected = set(diff.missing), set(diff.unexpected)
    in_order = list(expected.schema)
    order = {n: i for i, n in enumerate(in_order)}
    notes = []
    for container, blocks in ctx.expected_blocks.items():
        indices = sorted(blocks)
        if len(indices) != count:
            continue
        lacking = [i for i in indices if any(n in missing for n in blocks[i])]
        if not lacking:
            continue
        first = lacking[0]
        tail = [i for i in indices if i >= first]
        if lacking != tail or not all(n in missing for i in tail[1:] for n in blocks[i]):
            continue  # holes in the middle are not an interrupted write
        start = min(order[n] for n in blocks[first] if n in missing)
        while start and in_order[start - 1] in missing:
            start -= 1  # the cut may fall before the blocks: an embedding written, then nothing
        written = [n for ix in ctx.actual_blocks.values() for names in ix.values() for n in names]
        if (any(n not in missing and order[n] > start for n in blocks[first])
                or any(order[n] < start for n in diff.missing)
                or any(n in unexpected for n in written)):
            # written after the cut, absent before it, or blocks the model lacks written
            # (a renamed container too): a rename or another model, not a save cut short
            continue
        # every absent name from the cut on; the whole blocks among them also get a
        # layer-count note (what is missing), this note says why
        names = [n for n in diff.missing if order[n] >= start]
        ctx.explained.update(names)
        ctx.explained_config.add(name)
        partial = not all(n in missing for n in blocks[first])
        ends = (f"inside block {first}" if partial
                else f"at block {first - 1}" if first else "before block 0")
        notes.append(Note(
            "incomplete",
            f"{_block_run(container, tail)}: the {ctx.noun} ends {ends} but its stored "
            f"config says {name}={count}: likely an interrupted save "
            f"({_plural(len(names), 'tensor')} absent)",
            fix="re-run the save and let it finish (pc.save writes atomically; "
                "pc.verify(path) checks a file)",
            names=tuple(names)))
    return notes


def layer_count(diff, expected, actual, ctx) -> list[Note]:
    """A run of numbered blocks is on one side only: the models were built with other depths."""
    notes = []
    missing, unexpected = set(diff.missing), set(diff.unexpected)
    for container, e_blocks in ctx.expected_blocks.items():
        a_blocks = ctx.actual_blocks.get(container)
        if not a_blocks:
            continue  # a container absent on one side is a rename or a missing module
        n_model, n_ckpt = len(e_blocks), len(a_blocks)
        field_name = _layer_change(ctx, n_ckpt, n_model)
        change = ""
        if field_name:
            ctx.explained_config.add(field_name)
            change = f"; {field_name}: {n_ckpt} -> {n_model}"
        if field_name:
            fix = (f"build the model with {field_name}={n_ckpt}, or load a checkpoint "
                   f"saved from the {n_model}-block config")
        else:
            fix = (f"build the model with {n_ckpt} blocks, or load a checkpoint "
                   f"saved from the {n_model}-block model")
        extra = sorted(set(a_blocks) - set(e_blocks))
        names = [n for i in extra for n in a_blocks[i] if n in unexpected]
        if names:
            ctx.explained.update(names)
            notes.append(Note(
                "layer-count",
                f"{_block_run(container, extra)}: {_plural(len(extra), 'block')} "
                f"unexpected: the {ctx.noun} has {n_ckpt} blocks, the model {n_model}{change}",
                fix=fix, names=tuple(sorted(names))))
        lacking = sorted(set(e_blocks) - set(a_blocks))
        names = [n for i in lacking for n in e_blocks[i]
                 if n in missing and n not in ctx.explained]
        if names:
            ctx.explained.update(names)
            notes.append(Note(
                "layer-count",
                f"{_block_run(container, lacking)}: {_block_word(lacking)} missing: "
                f"the model has {n_model} blocks, the {ctx.noun} {n_ckpt}{change}",
                fix=fix, names=tuple(sorted(names))))
    return notes


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
    mapping = _listing([f"{_describe(rule)} ({len(p)})" for rule, p in found])
    example = next(iter(sorted(found[0][1].items())))
    return [Note(
        "renamed",
        f"{_plural(total, 'tensor')} {_verb(total, 'has', 'have')} other names in the {ctx.noun} "
        f"(model -> {ctx.noun}): "
        f"{mapping}; e.g. {example[0]} -> {example[1]}",
        fix="rename the keys when loading, or save from a model that uses the same names",
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
        f"{_plural(len(names), 'tensor')} missing from the {ctx.noun}: "
        f"{_runs(names, ctx.expected_blocks)}",
        fix="save the checkpoint from a model that has these modules, or build the model "
            "without them",
        names=tuple(names))]


def unexpected(diff, expected, actual, ctx) -> list[Note]:
    """Names the checkpoint has and the model lacks, no other rule explained."""
    names = [n for n in diff.unexpected if n not in ctx.explained]
    if not names:
        return []
    return [Note(
        "unexpected",
        f"{_plural(len(names), 'tensor')} in the {ctx.noun} {_verb(len(names), 'has', 'have')} "
        f"no place in the model: "
        f"{_runs(names, ctx.actual_blocks)}",
        fix="build the model with these modules, or drop the keys before loading",
        names=tuple(names))]


def config(diff, expected, actual, ctx) -> list[Note]:
    """Config fields that differ (those no other rule named)."""
    fields = [f for f in diff.config if f not in ctx.explained_config]
    if not fields:
        return []
    changes = [f"{f}: {_value(diff.config[f][1])} -> {_value(diff.config[f][0])}"
               for f in fields]
    return [Note(
        "config",
        f"config differs ({ctx.noun} -> model): {_listing(changes, 6)}",
        fix="build the model from the checkpoint's config, or save a new checkpoint "
            "from this config",
        names=tuple(fields), info=not diff.config_strict)]


def shape(diff, expected, actual, ctx) -> list[Note]:
    """Shape differences, grouped by the config field behind them, else by shape pattern."""
    if not diff.shape:
        return []
    sizes = {f: (e, a) for f, (e, a) in diff.config.items()
             if _is_count(e) and _is_count(a) and e != a}
    by_field: dict[str, list[str]] = defaultdict(list)
    by_pattern: dict[tuple, list[str]] = defaultdict(list)
    for name, (es, as_) in diff.shape.items():
        f = _field_behind(es, as_, sizes)
        if f:
            by_field[f].append(name)
        else:
            by_pattern[es, as_].append(name)
    notes = []
    for f, names in by_field.items():
        ctx.explained_config.add(f)
        ve, va = sizes[f]
        es, as_ = diff.shape[names[0]]
        notes.append(Note(
            "shape",
            f"{_plural(len(names), 'tensor')} {_verb(len(names), 'differs', 'differ')} in shape because {f}: {va} -> {ve} "
            f"(e.g. {names[0]}: {_shape(as_)} in the {ctx.noun}, {_shape(es)} in the model)",
            fix=f"build the model with {f}={va}, or load a checkpoint saved from the "
                f"{f}={ve} config",
            names=tuple(names)))
    patterns = sorted(by_pattern.items(), key=lambda kv: -len(kv[1]))
    for (es, as_), names in patterns[:6]:
        notes.append(Note(
            "shape",
            f"{_runs(names, ctx.expected_blocks)}: {_shape(as_)} in the {ctx.noun}, "
            f"{_shape(es)} in the model ({_plural(len(names), 'tensor')})",
            fix="the checkpoint comes from a model of another size: build the model from "
                "the checkpoint's config, or re-save from this model",
            names=tuple(names)))
    rest = [n for _, names in patterns[6:] for n in names]
    if rest:
        notes.append(Note(
            "shape", f"{_plural(len(rest), 'more tensor')} differ in shape in "
                     f"{len(patterns) - 6} other patterns: {_runs(rest, ctx.expected_blocks)}",
            fix="see the full list with verbose=True or --json", names=tuple(rest)))
    return notes


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _field_behind(es, as_, sizes: dict[str, tuple[int, int]]) -> str | None:
    """A config field whose change, scaled, accounts for every differing dim."""
    if len(es) != len(as_) or not sizes:
        return None
    pairs = [(e, a) for e, a in zip(es, as_) if e != a]
    best = None
    for f, (ve, va) in sizes.items():
        if all(e * va == a * ve and e % ve == 0 for e, a in pairs):
            if any(e == ve for e, _ in pairs):
                return f  # the field's own value appears in the shape: the best witness
            best = best or f
    if best is None and len(sizes) == 1:
        # the only size that changed is the cause even when not proportional:
        # head size = hidden / heads shrinks as heads grow
        return next(iter(sizes))
    return best


def dtype(diff, expected, actual, ctx) -> list[Note]:
    """Dtype differences, one note per (checkpoint dtype, model dtype)."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name, (e, a) in diff.dtype.items():
        groups[e, a].append(name)
    notes = []
    for (e, a), names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        en, an = dtype_name(e), dtype_name(a)
        where = f" ({_runs(names, ctx.expected_blocks)})" if len(names) <= SHOW else ""
        notes.append(Note(
            "dtype",
            f"{_plural(len(names), 'tensor')} {_verb(len(names), 'is', 'are')} {an} in "
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
        f"{_plural(n, 'tensor')} {_verb(n, 'differs', 'differ')} in value ({how}): {size} at {worst}",
        fix="the checkpoint holds other weights than the model: re-save from this model, or "
            "pass atol=/rtol= if small numeric drift is expected",
        names=tuple(sorted(diff.values)))]


def tied(diff, expected, actual, ctx) -> list[Note]:
    """Tie groups of the model that the checkpoint stores as separate tensors."""
    if not diff.ties:
        return []
    groups = [" = ".join(g) for g in diff.ties]
    return [Note(
        "tied",
        f"{_plural(len(groups), 'tie group')} broken: {_listing(groups, 2)} share one tensor "
        f"in the model but are separate in the {ctx.noun}",
        fix="save with torch.save or pc.save (both keep sharing), or re-tie after loading "
            "(e.g. model.tie_weights())",
        names=tuple(n for g in diff.ties for n in g))]


#: the rules, in the order they claim names: specific causes before generic ones
RULES: list[Rule] = [layer_count, incomplete, renamed, missing, unexpected, shape, config,
                     dtype, values, tied]
