"""A base model and the model that holds it with a head (transformers' ``...ForCausalLM`` around
its ``LlamaModel``): once the attribute prefix is undone, the head is what one side lacks."""

from __future__ import annotations

from ...checkpoint.notes import Note
from .context import plural, runs, verb


def base_model_head(diff, expected, actual, ctx) -> list[Note]:
    """Names outside the attribute prefix that was undone: the head a base checkpoint lacks, or
    the head a whole-model checkpoint carries beside the base model it is read into."""
    if actual.attribute_prefix is None:
        return []
    prefix, how = actual.attribute_prefix
    attr = prefix.rstrip(".")
    if how == "added":
        # the checkpoint holds only what the model keeps as .model: the rest of the model is its head
        names = [n for n in diff.missing if not n.startswith(prefix) and n not in ctx.explained]
        if not names:
            return []
        ctx.explained.update(names)
        return [Note(
            "missing",
            f"the {ctx.noun} holds only the base model (what the {ctx.model} keeps as .{attr}): "
            f"the head is not in it, {plural(len(names), 'tensor')} missing: "
            f"{runs(names, ctx.expected_blocks)}",
            fix=(f"save the whole model (with its head) when the head is trained, or load with "
                 f"expect_missing={sorted({n.split('.', 1)[0] for n in names})!r} when it starts "
                 "fresh"),
            names=tuple(names))]
    kept = [n for n in diff.unexpected if not n.startswith(prefix) and n not in ctx.explained
            and n in _kept(actual, prefix)]
    if not kept:
        return []
    ctx.explained.update(kept)
    return [Note(
        "unexpected",
        f"the {ctx.noun} holds a head beside the base model it keeps as .{attr}, which the "
        f"{ctx.model} lacks: {runs(kept, ctx.actual_blocks)} "
        f"{verb(len(kept), 'has', 'have')} no place in it",
        fix="load it into the model with the head (the class it was saved from), or drop the "
            "head's keys when only the base model is wanted",
        names=tuple(kept))]


def _kept(view, prefix: str) -> set[str]:
    # names of the view that did not carry the prefix in the source (read as they were)
    return {c for c in view.tensors if not view.source_names.get(c, c).endswith(prefix + c)}
