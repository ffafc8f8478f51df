"""Find the state dict inside whatever a checkpoint file holds.

Training scripts nest weights anywhere: ``{"trainer": {"var_wo_ddp": sd}}``,
``{"state_dict": sd}``, ``{"model": sd, "ema": sd2, "optimizer": ...}``.
``candidates`` lists every mapping of names to tensors; ``choose`` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

Path_ = tuple  # a path inside the tree: keys (str) and indices (int)

#: keys a state dict may hold that are not tensors (module extra state)
_EXTRA_STATE_SUFFIX = "_extra_state"


@dataclass(frozen=True)
class Candidate:
    """A mapping of names to tensors found at ``path`` inside the tree."""

    path: tuple[str | int, ...]
    tensors: Mapping[str, torch.Tensor]

    @property
    def count(self) -> int:
        return len(self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def per_parameter_state(self) -> bool:
        # Optimizer state lives under integer parameter ids: state[0] = {"exp_avg": ...}.
        return any(isinstance(p, int) for p in self.path)


#: keys under which training states keep the model itself (beside an EMA, a teacher, ...)
MODEL_KEYS = frozenset({"model", "state_dict", "model_state_dict", "model_state", "net", "network",
                        "model_weights"})


def named_model(found: Sequence[Candidate]) -> Candidate | None:
    """The one candidate a training state names as the model (its key is in :data:`MODEL_KEYS`),
    else ``None`` (none, or several).

    >>> sd = {"w": torch.zeros(2)}
    >>> named_model(candidates({"model": sd, "ema": dict(sd)})).path
    ('model',)
    """
    named = [c for c in found if c.path and not c.per_parameter_state
             and isinstance(c.path[-1], str) and c.path[-1] in MODEL_KEYS]
    return named[0] if len(named) == 1 else None


def format_path(path: Sequence[str | int]) -> str:
    """``("trainer", "var_wo_ddp")`` -> ``trainer.var_wo_ddp``; ``()`` -> ``<top level>``."""
    if not path:
        return "<top level>"
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _as_state_dict(obj: Mapping) -> dict[str, torch.Tensor] | None:
    # the usual case, decided from the set of key and value types (map runs at C speed)
    if set(map(type, obj)) <= {str} and all(
            issubclass(t, torch.Tensor) for t in set(map(type, obj.values()))):
        return dict(obj) or None
    tensors = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            return None
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif key.endswith(_EXTRA_STATE_SUFFIX) or value is None:
            continue
        else:
            return None
    return tensors or None


def candidates(tree: Any, *, max_depth: int = 16) -> list[Candidate]:
    """Every mapping of ``str -> Tensor`` in ``tree``, depth first, in file order.

    >>> sd = {"w": torch.zeros(2)}
    >>> [c.path for c in candidates({"epoch": 3, "trainer": {"var_wo_ddp": sd}})]
    [('trainer', 'var_wo_ddp')]
    """
    return list(_walk(tree, (), max_depth, set()))


def _walk(node: Any, path: tuple, depth: int, seen: set[int]) -> Iterator[Candidate]:
    if depth < 0 or id(node) in seen:
        return
    if isinstance(node, Mapping):
        seen.add(id(node))
        state_dict = _as_state_dict(node)
        if state_dict is not None:
            yield Candidate(path, state_dict)
            return
        for key, value in node.items():
            yield from _walk(value, path + (key,), depth - 1, seen)
    elif isinstance(node, (list, tuple)):
        seen.add(id(node))
        for index, value in enumerate(node):
            yield from _walk(value, path + (index,), depth - 1, seen)


def choose(
    found: Sequence[Candidate],
    score: Callable[[Candidate], float] | None = None,
) -> Candidate | None:
    """The candidate that wins.

    With ``score`` (how well a candidate matches the target schema), the best
    score wins; otherwise, and among equal scores, the most tensors, then the
    most bytes. Per-parameter optimizer state always ranks last.
    """
    if len(found) <= 1:
        return found[0] if found else None

    def rank(c: Candidate):
        return (
            not c.per_parameter_state,
            score(c) if score is not None else 0.0,
            c.count,
            c.nbytes,
        )

    return max(found, key=rank)
