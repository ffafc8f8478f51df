"""Sizes: shapes that differ (grouped by the config field behind them) and config fields that differ."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ...checkpoint.notes import Note
from .context import by_side, listing, plural, runs, shape_text, value_text, verb



_SAVE_AS_IS = "your save must write the model's tensors as they are: save model.state_dict()"


def config(diff, expected, actual, ctx) -> list[Note]:
    """Config fields that differ (those no other rule named)."""
    fields = [f for f in diff.config if f not in ctx.explained_config]
    if not fields:
        return []
    changes = [f"{f}: {value_text(diff.config[f][1])} -> {value_text(diff.config[f][0])}"
               for f in fields]
    return [Note(
        "config",
        f"config differs ({ctx.noun} -> {ctx.model}): {listing(changes, 6)}",
        fix=by_side(ctx, "build the model from the checkpoint's config, or save a new checkpoint "
                         "from this config",
                    load="build the model in your load from the config training saved",
                    save="your save must store the config the model was built from"),
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
            f"{plural(len(names), 'tensor')} {verb(len(names), 'differs', 'differ')} in shape because {f}: {va} -> {ve} "
            f"(e.g. {names[0]}: {shape_text(as_)} in the {ctx.noun}, {shape_text(es)} in the "
            f"{ctx.model})",
            fix=by_side(ctx, f"build the model with {f}={va}, or load a checkpoint saved from the "
                             f"{f}={ve} config",
                        load=f"build the model in your load with {f}={ctx.right(ve, va)}, as "
                             "training does",
                        save=_SAVE_AS_IS),
            names=tuple(names)))
    patterns = sorted(by_pattern.items(), key=lambda kv: -len(kv[1]))
    for (es, as_), names in patterns[:6]:
        notes.append(Note(
            "shape",
            f"{runs(names, ctx.expected_blocks)}: {shape_text(as_)} in the {ctx.noun}, "
            f"{shape_text(es)} in the {ctx.model} ({plural(len(names), 'tensor')})",
            fix=by_side(ctx, "the checkpoint comes from a model of another size: build the model "
                             "from the checkpoint's config, or re-save from this model",
                        load="build the model in your load with the sizes training uses (from "
                             "the config it saved)",
                        save=_SAVE_AS_IS),
            names=tuple(names)))
    rest = [n for _, names in patterns[6:] for n in names]
    if rest:
        notes.append(Note(
            "shape", f"{plural(len(rest), 'more tensor')} differ in shape in "
                     f"{len(patterns) - 6} other patterns: {runs(rest, ctx.expected_blocks)}",
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
