"""What the diagnosis rules share: the :class:`Context` and the words every cause is written in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...checkpoint.configs import ABSENT, flatten
from ..ranges import collapse, format_indices

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
    #: what the notes call the expected side (``View.expected_noun``): "model", "saved model"
    model: str = "model"
    #: how the expected side's block count is said when code built it ("your load built");
    #: None: "the <model> has"
    built: str | None = None
    #: whose code a fix points at: "load" or "save" (``View.made_by``); None: either side
    fix_side: str | None = None
    #: the side made by that code: "expected" or "actual"
    at_fault: str | None = None
    #: missing/unexpected names a rule has explained
    explained: set[str] = field(default_factory=set)
    #: config fields a rule has named
    explained_config: set[str] = field(default_factory=set)
    #: {container: {block index: [names]}} per side, filled by :func:`diagnose`
    expected_blocks: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    actual_blocks: dict[str, dict[int, list[str]]] = field(default_factory=dict)

    def model_has(self, n: int) -> str:
        """``the model has 3 blocks``; ``your load built 3 blocks``."""
        return f"{self.built} {plural(n, 'block')}" if self.built else f"the {self.model} has {plural(n, 'block')}"

    def model_count(self, n: int) -> str:
        """``the model 3`` (after ``the checkpoint has 4 blocks, ``); ``your load built 3``."""
        return f"{self.built} {n}" if self.built else f"the {self.model} {n}"

    def right(self, expected: Any, actual: Any) -> Any:
        """Of a value on each side, the one of the side not at fault (what the fix aims for)."""
        return actual if self.at_fault == "expected" else expected

    def wrong(self, expected: Any, actual: Any) -> Any:
        """Of a value on each side, the one of the side at fault."""
        return expected if self.at_fault == "expected" else actual


def block_run(container: str, indices) -> str:
    """``layers.8-15.*``; top-level blocks (an ``nn.Sequential``) read ``8-15.*``."""
    return f"{container}.{format_indices(indices)}.*" if container else f"{format_indices(indices)}.*"


def by_side(ctx: Context, default: str, *, load: str, save: str) -> str:
    """The fix aimed at the code at fault in a round trip (``ctx.fix_side``); ``default``
    (either side may change) elsewhere."""
    return {"load": load, "save": save}.get(ctx.fix_side or "", default)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def verb(n: int, singular: str, plural: str) -> str:
    return singular if n == 1 else plural


def listing(items: list[str], show: int = SHOW) -> str:
    head = ", ".join(items[:show])
    return head if len(items) <= show else f"{head} and {len(items) - show} more"


def runs(names, blocks=None) -> str:
    return listing([r.display for r in collapse(names, blocks=blocks)])


def shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def value_text(v: Any) -> str:
    return repr(v) if isinstance(v, str) or v is ABSENT else str(v)


def block_word(indices: list[int]) -> str:
    return f"{'block' if len(indices) == 1 else 'blocks'} {format_indices(indices)}"


def cfg_get(cfg: dict | None, name: str) -> Any:
    return ABSENT if cfg is None else flatten(cfg).get(name, ABSENT)
