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
    #: missing/unexpected names a rule has explained
    explained: set[str] = field(default_factory=set)
    #: config fields a rule has named
    explained_config: set[str] = field(default_factory=set)
    #: {container: {block index: [names]}} per side, filled by :func:`diagnose`
    expected_blocks: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    actual_blocks: dict[str, dict[int, list[str]]] = field(default_factory=dict)


def block_run(container: str, indices) -> str:
    """``layers.8-15.*``; top-level blocks (an ``nn.Sequential``) read ``8-15.*``."""
    return f"{container}.{format_indices(indices)}.*" if container else f"{format_indices(indices)}.*"


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
