"""Numbered blocks: a run of blocks on one side only (layer count), a tail cut off (incomplete)."""

from __future__ import annotations

from ...checkpoint.configs import int_fields_equal, layer_field
from ...checkpoint.notes import Note
from .context import Context, block_run, block_word, cfg_get, plural



def _layer_change(ctx: Context, n_ckpt: int, n_model: int) -> str | None:
    """The config field that sets the block count, when a config shows it."""
    ec, ac = ctx.expected_config, ctx.actual_config
    if n_ckpt == n_model:
        return None
    if ac is not None and ec is not None:
        names = [layer_field(ac), layer_field(ec)]
        names += int_fields_equal(ac, n_ckpt) + int_fields_equal(ec, n_model)
        for name in dict.fromkeys(n for n in names if n):
            if cfg_get(ac, name) == n_ckpt and cfg_get(ec, name) == n_model:
                return name
        return None
    # one config known: trust only a field named like a layer count, and only if it agrees
    known, count = (ac, n_ckpt) if ac is not None else (ec, n_model)
    name = layer_field(known)
    return name if name and cfg_get(known, name) == count else None


def _layer_fix(ctx: Context, field_name: str | None, n_ckpt: int, n_model: int) -> str:
    """Build with the other depth; in a round trip, in the code that must change."""
    if ctx.fix_side == "load":
        right = ctx.right(n_model, n_ckpt)
        how = f"{field_name}={right}" if field_name else plural(right, "block")
        return f"build the model in your load with {how}, as training does"
    if ctx.fix_side == "save":
        return "your save must write every block of the model it is given"
    if field_name:
        return (f"build the model with {field_name}={n_ckpt}, or load a checkpoint "
                f"saved from the {n_model}-block config")
    return (f"build the model with {plural(n_ckpt, 'block')}, or load a checkpoint "
            f"saved from the {n_model}-block model")


def incomplete(diff, expected, actual, ctx) -> list[Note]:
    """The checkpoint lacks a tail of blocks its own stored config says it has."""
    cfg = actual.config
    name = layer_field(cfg)
    if not name or not diff.missing:
        return []
    count = cfg_get(cfg, name)
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
            f"{block_run(container, tail)}: the {ctx.noun} ends {ends} but its stored "
            f"config says {name}={count}: likely an interrupted save "
            f"({plural(len(names), 'tensor')} absent)",
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
        fix = _layer_fix(ctx, field_name, n_ckpt, n_model)
        extra = sorted(set(a_blocks) - set(e_blocks))
        names = [n for i in extra for n in a_blocks[i] if n in unexpected]
        if names:
            ctx.explained.update(names)
            notes.append(Note(
                "layer-count",
                f"{block_run(container, extra)}: {plural(len(extra), 'block')} "
                f"unexpected: the {ctx.noun} has {plural(n_ckpt, 'block')}, "
                f"{ctx.model_count(n_model)}{change}",
                fix=fix, names=tuple(sorted(names))))
        lacking = sorted(set(e_blocks) - set(a_blocks))
        names = [n for i in lacking for n in e_blocks[i]
                 if n in missing and n not in ctx.explained]
        if names:
            ctx.explained.update(names)
            notes.append(Note(
                "layer-count",
                f"{block_run(container, lacking)}: {block_word(lacking)} missing: "
                f"{ctx.model_has(n_model)}, the {ctx.noun} {n_ckpt}{change}",
                fix=fix, names=tuple(sorted(names))))
    return notes
