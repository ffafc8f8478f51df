"""Where the weights were found: a training state's model that lacks what a copy beside it holds."""

from __future__ import annotations

from ...checkpoint.locate import format_path
from ...checkpoint.notes import Note
from .context import by_side, plural, runs


def partial_model(diff, expected, actual, ctx) -> list[Note]:
    """The mapping the training state names as the model was read, and it lacks tensors that
    another mapping beside it (an EMA) holds: the save is at fault, whichever copy fits. On
    either side: a file read for a model, or a file pinned against its schema snapshot."""
    notes = []
    for view, absent, blocks, other in ((actual, diff.missing, ctx.expected_blocks, ctx.model),
                                        (expected, diff.unexpected, ctx.actual_blocks, ctx.noun)):
        if view.partial is not None:
            notes += _partial(view, absent, blocks, other, ctx)
    return notes


def _partial(view, absent, blocks, other: str, ctx) -> list[Note]:
    partial = view.partial
    lacking = set(partial.lacking)
    names = [n for n in absent if n in lacking and n not in ctx.explained]
    if not names:
        return []
    ctx.explained.update(names)
    read, rival = format_path(partial.read), format_path(partial.rival)
    return [Note(
        "partial",
        f"{read} in {view.label}, the training state's model, lacks {plural(len(names), 'tensor')} "
        f"that {rival} beside it holds: {runs(names, blocks)}; read {read}, not "
        f"{rival} (which fits the {other}, but is another copy of its weights, e.g. an EMA)",
        fix=by_side(ctx, f"save the whole model.state_dict() as {read} (named_parameters() leaves "
                         f"out buffers such as BatchNorm's running stats); to load {rival} on "
                         f"purpose, pass that mapping itself (torch.load(path, weights_only=True)"
                         f"{_subscript(partial.rival)})",
                    load=f"your load must read {read} whole, as training saved it",
                    save=f"your save must write the whole model.state_dict() as {read} "
                         "(named_parameters() leaves out buffers such as BatchNorm's running stats)"),
        names=tuple(names))]


def _subscript(path) -> str:
    return "".join(f"[{p!r}]" for p in path)
