"""The diagnosis rules, one module per family of causes, registered in one list.

A rule is ``rule(diff, expected, actual, ctx) -> list[Note]``; adding a cause is adding a
function to a family module and to :data:`RULES`. Rules run in order and mark the names and
config fields they explain in ``ctx``, so later, more generic rules (missing, unexpected,
config) only speak about what is left.

Wording: *expected* is the model (``ctx.model``: "saved model" in a round trip), *actual* the
checkpoint (``ctx.noun``: "snapshot" when the actual side is a golden schema snapshot, "reloaded
model" in a round trip); a change is written ``checkpoint value -> model value``. A fix names
what to change; in a round trip (``ctx.fix_side``) only in the code at fault, your load or your
save (:func:`~.context.by_side`).
"""

from __future__ import annotations

from typing import Callable

from ...checkpoint.notes import Note
from ...checkpoint.view import View
from ..diff import Diff
from .adapters import adapter_keys_match_nothing, merged_with_adapter_keys, noop_adapter
from .blocks import incomplete, layer_count
from .casts import rounded
from .context import Context
from .heads import base_model_head
from .loading import fresh_init, load_matched_nothing
from .located import partial_model
from .names import missing, renamed, unexpected
from .shapes import config, shape
from .tensors import dataless, dtype, tied, tied_copies, values

__all__ = ["Context", "Rule", "RULES"]

Rule = Callable[[Diff, View, View, Context], "list[Note]"]

#: the rules, in the order they claim names: specific causes before generic ones
RULES: list[Rule] = [partial_model, layer_count, incomplete, adapter_keys_match_nothing, merged_with_adapter_keys,
                     renamed, base_model_head, missing, unexpected, shape, config, dtype, dataless,
                     noop_adapter, load_matched_nothing, fresh_init, rounded, values, tied,
                     tied_copies]
