"""Collapse names into runs of numbered blocks: ``model.layers.8-15.*`` instead of 80 keys."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sized

__all__ = ["Run", "collapse", "block_counts", "split_block", "format_indices"]


@dataclass(frozen=True)
class Run:
    """Names that read as one item in a report.

    ``container`` is the module list (``"model.layers"``; ``None`` for a
    name outside any numbered block), ``indices`` the block numbers,
    ``suffix`` the part after the block number (``"*"`` for whole blocks),
    ``display`` the text to print, ``names`` the names covered.
    """

    container: str | None
    indices: tuple[int, ...]
    suffix: str | None
    display: str
    names: tuple[str, ...]

    @property
    def whole(self) -> bool:
        """True when the run stands for entire blocks."""
        return self.suffix == "*"

    @property
    def count(self) -> int:
        """Blocks in the run (1 for a plain name)."""
        return len(self.indices) or 1


def split_block(name: str) -> tuple[str, int, str] | None:
    """``"model.layers.8.mlp.w"`` -> ``("model.layers", 8, "mlp.w")``; ``None`` outside blocks.

    The first all-digit component is the block number.

    >>> split_block("model.layers.8.mlp.w")
    ('model.layers', 8, 'mlp.w')
    >>> split_block("lm_head.weight") is None
    True
    """
    m = _BLOCK.match(name)
    if m is None:
        return None
    return m.group(1) or "", int(m.group(2)), name[m.end():]


#: the first all-digit component that is followed by more name
_BLOCK = re.compile(r"(?:(.*?)\.)?(\d+)\.(?=.)", re.DOTALL)


def index_blocks(names: Iterable[str]) -> dict[str, dict[int, list[str]]]:
    """``{container: {block index: [names]}}`` for the numbered blocks among ``names``.

    Runs over every name of a schema (200,000 for a large MoE), so it works on
    the sorted names: there a block's names (``model.layers.8.*``) are one run,
    whose end is found by bisection, and only the first name of a run goes
    through the regex. Containers and names come in sorted order.

    >>> index_blocks(["h.0.w", "h.1.w", "h.1.b", "wte.weight"])
    {'h': {0: ['h.0.w'], 1: ['h.1.b', 'h.1.w']}}
    """
    ordered = sorted(names)
    out: dict[str, dict[int, list[str]]] = {}
    match = _BLOCK.match
    i = 0
    while i < len(ordered):
        m = match(ordered[i])
        if m is None:
            i += 1
            continue
        # every name from here up to prefix-with-"/"-for-its-last-"." starts with the prefix
        prefix = ordered[i][:m.end()]
        end = bisect_left(ordered, prefix[:-1] + "/", i)
        container, index = m.groups()
        out.setdefault(container or "", {}).setdefault(int(index), []).extend(ordered[i:end])
        i = end
    return out


def block_counts(names: Iterable[str]) -> dict[str, list[int]]:
    """``{container: sorted block indices}`` for the numbered blocks among ``names``.

    >>> block_counts(["h.0.w", "h.1.w", "h.1.b", "wte.weight"])
    {'h': [0, 1]}
    """
    return {c: sorted(ix) for c, ix in index_blocks(names).items()}


def format_indices(indices: Iterable[int], limit: int = 8) -> str:
    """``[8..15]`` -> ``"8-15"``; with gaps ``"{1,3,5-7}"``; one index -> ``"3"``.

    More than ``limit`` spans elide the middle: ``"{0,2,4,...,98}"``.

    >>> format_indices([1, 3, 5, 6, 7])
    '{1,3,5-7}'
    >>> format_indices(range(0, 100, 2), limit=4)
    '{0,2,4,...,98}'
    """
    ix = sorted(set(indices))
    spans: list[str] = []
    start = prev = None
    for i in ix + [None]:
        if start is not None and (i is None or i != prev + 1):
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    if len(spans) == 1:
        return spans[0]
    if len(spans) > limit:
        spans = spans[:limit - 1] + ["..."] + spans[-1:]
    return "{" + ",".join(spans) + "}"


def _join(container: str, indices: Iterable[int], suffix: str) -> str:
    head = f"{container}." if container else ""
    return f"{head}{format_indices(indices)}.{suffix}"


def _natural(name: str) -> tuple:
    # "layers.10" sorts after "layers.9"
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def collapse(names: Iterable[str], universe: Iterable[str] | None = None, *,
             blocks: Mapping[str, Mapping[int, Sized]] | None = None) -> list[Run]:
    """Group ``names`` into :class:`Run` s, whole blocks first, in natural order.

    ``universe`` is every name of the side the names come from: a block counts
    as whole when all its names in ``universe`` are among ``names``. Without
    it, a block is whole when it holds every suffix seen in its container (and
    there are at least two). ``blocks`` (``{container: {index: names}}`` of
    the universe) may stand in for ``universe`` when the caller has it
    already. The rest collapse per suffix across blocks:
    ``model.layers.0-15.mlp.up.weight``.

    >>> [r.display for r in collapse(["l.0.a", "l.0.b", "l.1.a", "l.1.b", "head"])]
    ['head', 'l.0-1.*']
    """
    names = list(dict.fromkeys(names))
    found: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    runs: list[Run] = []
    for name in names:
        split = split_block(name)
        if split is None:
            runs.append(Run(None, (), None, name, (name,)))
        else:
            found[split[0]][split[1]].add(split[2])
    full = _full_blocks(found, universe, blocks)
    for container, by_index in found.items():
        whole = sorted(i for i, sfx in by_index.items() if full(container, i, sfx))
        if whole:
            covered = tuple(f"{container}.{i}.{s}" if container else f"{i}.{s}"
                            for i in whole for s in sorted(by_index[i], key=_natural))
            runs.append(Run(container, tuple(whole), "*", _join(container, whole, "*"), covered))
        per_suffix: dict[str, list[int]] = defaultdict(list)
        for i, sfx in by_index.items():
            if i in whole:
                continue
            for s in sfx:
                per_suffix[s].append(i)
        for s, ix in per_suffix.items():
            ix.sort()
            covered = tuple(f"{container}.{i}.{s}" if container else f"{i}.{s}" for i in ix)
            runs.append(Run(container, tuple(ix), s, _join(container, ix, s), covered))
    runs.sort(key=lambda r: _natural(r.names[0]))
    return runs


def _full_blocks(blocks, universe, universe_blocks):
    """A predicate ``(container, index, suffixes) -> bool``: is the block entirely present?"""
    if universe_blocks is not None:
        return lambda c, i, sfx: len(sfx) >= len(universe_blocks.get(c, {}).get(i, ()))
    if universe is None:
        union = {c: set().union(*by_index.values()) for c, by_index in blocks.items()}
        return lambda c, i, sfx: len(union[c]) > 1 and sfx == union[c]
    sizes: dict[tuple[str, int], int] = defaultdict(int)
    heads = tuple(f"{c}." if c else "" for c in blocks)
    for name in universe:
        if not name.startswith(heads):
            continue  # cheap filter: most of a large schema is in no container of interest
        split = split_block(name)
        if split is not None and split[0] in blocks:
            sizes[split[0], split[1]] += 1
    return lambda c, i, sfx: len(sfx) >= sizes.get((c, i), 0)
