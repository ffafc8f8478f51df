"""The data ledger across ranks: which samples the ranks of a resumed run trained on, against the
global batches of the uninterrupted run (exactly once each, whatever the world size).

A sample is one row of a batch ``step`` returned (the first dimension of its tensors), known by a
digest of its values; it is named by its place in the uninterrupted run's global order: the
samples of step 1 on rank 0, rank 1, ..., then step 2, and so on, counted from 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from .capture import digest


def samples(batch: Any) -> list[str]:
    """One digest per sample of ``batch``: the rows of its tensors (a tensor, or a tuple, list or
    mapping of tensors with the same first dimension). ``[]`` for a batch with no rows to follow.

    >>> a = samples((torch.arange(6).reshape(3, 2), torch.tensor([0, 1, 0])))
    >>> len(a), a[0] == samples((torch.tensor([[0, 1]]), torch.tensor([0])))[0]
    (3, True)
    """
    tensors = _tensors(batch)
    if not tensors or any(t.dim() == 0 for t in tensors) or len({t.shape[0] for t in tensors}) != 1:
        return []
    return [digest([t[i] for t in tensors]) for i in range(tensors[0].shape[0])]


def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    out = [v for v in values if isinstance(v, torch.Tensor)]
    return out if len(out) == len(values) else []


@dataclass(frozen=True)
class Coverage:
    """A sample the resumed ranks did not train on exactly as often as the uninterrupted run did in
    the same steps. ``sample``: its place in the uninterrupted run's global order (``None``: that run
    never saw it); ``seen``: ``(step, rank)`` where the resumed ranks trained on it."""

    sample: int | None
    expected: int
    seen: tuple[tuple[int, int], ...]
    #: the uninterrupted run's step that trained on it (``None``: never)
    step: int | None = None

    @property
    def how(self) -> str:
        if self.sample is None:
            return "unseen"
        return "repeated" if len(self.seen) > self.expected else "skipped"


def coverage(expected: Sequence[Sequence[Sequence[str]]], actual: Sequence[Sequence[Sequence[str]]],
             at: int) -> list[Coverage]:
    """The samples of steps ``at+1``.. that the resumed ranks did not cover exactly once.

    ``expected[s][r]``: the samples rank ``r`` of the uninterrupted run trained on at step ``s + 1``
    (every step); ``actual[j][r]``: the resumed run's ranks at step ``at + 1 + j``. Over the remaining
    steps, the union of every rank's samples must be the uninterrupted run's, each as many times.

    >>> ref = [[["a"], ["b"]], [["c"], ["d"]], [["e"], ["f"]]]
    >>> coverage(ref, [[["c"], ["d"], []], [["e"], ["f"], []]], 1)
    []
    >>> [(c.sample, c.how, c.seen) for c in coverage(ref, [[["c"], ["d"], ["e"]], [["d"], ["e"], ["b"]]], 1)]
    [(1, 'repeated', ((3, 2),)), (3, 'repeated', ((2, 1), (3, 0))), (4, 'repeated', ((2, 2), (3, 1))), (5, 'skipped', ())]
    """
    order: dict[str, int] = {}
    first: dict[str, int] = {}
    for n, ranks in enumerate(expected):
        for rank in ranks:
            for s in rank:
                order.setdefault(s, len(order))
                first.setdefault(s, n + 1)
    wanted: dict[str, int] = {}
    for ranks in expected[at:]:
        for rank in ranks:
            for s in rank:
                wanted[s] = wanted.get(s, 0) + 1
    seen: dict[str, list[tuple[int, int]]] = {}
    for j, ranks in enumerate(actual):
        for r, rank in enumerate(ranks):
            for s in rank:
                seen.setdefault(s, []).append((at + 1 + j, r))
    out = []
    for s in sorted(set(wanted) | set(seen), key=lambda s: order.get(s, len(order))):
        if len(seen.get(s, ())) != wanted.get(s, 0):
            out.append(Coverage(order.get(s), wanted.get(s, 0), tuple(seen.get(s, ())), first.get(s)))
    return out
