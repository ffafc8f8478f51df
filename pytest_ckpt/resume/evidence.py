"""What a failing resume point gathers beyond the comparison, to tell a cause from its consequence.

- :func:`set_aside`: differences the evidence says are no cause: the data pipeline's own bookkeeping
  (a DataLoader iterator's batch count, a sampler's cursor) while every later batch and loss matches,
  and, right after load, what the step builds itself (start does not).
- :class:`Evidence`: the checkpoint the project's save wrote, read once and only when asked: where it
  holds each differing component's state (the uninterrupted run's, or the one the resumed run has),
  the dtype it holds the weights in, the weights it holds instead (a copy), the data position as a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .compare import Difference, LedgerEntry, cast_round_trip, same
from .saved import Location, position, read_checkpoint, weights, where, where_like


def set_aside(after_load: list[Difference], final: list[Difference], ref: Any, resumed: Any, *,
              continuation_matches: bool, batches_followed: bool
              ) -> tuple[list[Difference], list[Difference], dict[str, str]]:
    """``after_load`` and ``final`` less the differences that are no cause, and why each was set aside.

    ``ref``/``resumed``: the two runs' traces (``started``, ``bookkeeping``).
    """
    aside: dict[str, str] = {}
    differs_at_end = {d.path for d in final}
    for d in after_load:
        # what a step builds is no cause for being absent right after load (the next step builds it), unless
        # the training itself is unchanged and it still differs after the last step: then nothing else made it
        # differ (an EMA kept beside the training that load never restores)
        if (d.absent == "resumed" and d.path not in ref.started
                and not (continuation_matches and d.path in differs_at_end)):
            aside[d.path] = ("start does not build it (a step does): not compared right after load, only after "
                             "the last step")
    after_load = [d for d in after_load if d.path not in aside]
    if continuation_matches:
        books = ref.bookkeeping | resumed.bookkeeping
        later = "batch and loss" if batches_followed else "loss"
        for d in (*after_load, *final):
            if d.path in books and d.path not in aside:
                aside[d.path] = (f"the data pipeline's own bookkeeping ({_pairs(d)} after load) while every later "
                                 f"{later} equals the uninterrupted run's: the data position is where it counts")
        after_load = [d for d in after_load if d.path not in books]
        final = [d for d in final if d.path not in books]
    return after_load, final, aside


def _pairs(d: Difference) -> str:
    shown = [f"{'' if what in ('', d.path) else what + ' '}{act!r} (uninterrupted: {exp!r})"
             for what, exp, act in d.items[:2]]
    return ", ".join(shown) or "its state differs"


class Evidence:
    """The checkpoint of one resume point, read at the first question, and the states on both sides.

    ``expected``/``actual``: path -> the uninterrupted run's state after step ``at`` and the resumed
    run's right after load (snapshots).
    """

    #: the kinds of state a random stream can have drawn (a batch fetched ahead, a generator)
    DRAWN = frozenset({"tensor", "tensors", "data", "state", "generator", "global-rng"})

    def __init__(self, checkpoint: Path, expected: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
        self.checkpoint, self.expected, self.actual = checkpoint, expected, actual
        self._held: Any = None
        self._partial = False
        self._read = False

    @property
    def held(self) -> Mapping[str, Any] | None:
        """The checkpoint's objects by file name (``None``: none could be read)."""
        if not self._read:
            saved = read_checkpoint(self.checkpoint)
            # the safe readers' result (objects by file, and the files read only in part), or a plain mapping
            self._held = getattr(saved, "objects", saved)
            self._partial = bool(getattr(saved, "partial", None))
            self._read = True
        return self._held

    def locations(self, diffs: Iterable[Difference]) -> dict[str, Location | None]:
        """path -> where the checkpoint holds the uninterrupted run's state of it (``None``: nowhere), for
        every difference but a module's weights (those are read by name, with their prefixes). A file read
        only in part may hold what was found nowhere: then only what was found is said."""
        wanted = [d for d in diffs if not d.absent and d.kind != "module"]
        if not wanted or self.held is None:
            return {}
        found = {d.path: where(self.held, d.kind, d.path, self.expected[d.path]) for d in wanted}
        return {p: at for p, at in found.items() if at is not None or not self._partial}

    def where_actual(self, diffs: Iterable[Difference]) -> dict[str, tuple[Location, bool]]:
        """path -> where the checkpoint holds the state the resumed run has after load (``True``), or a state
        of the same make saved at another time (``False``), for random states."""
        wanted = [d for d in diffs if not d.absent and d.kind in ("generator", "global-rng")]
        if not wanted or self.held is None:
            return {}
        out = {}
        for d in wanted:
            exact = where(self.held, d.kind, d.path, self.actual[d.path])
            like = exact or where_like(self.held, self.actual[d.path])
            if like is not None:
                out[d.path] = (like, exact is not None)
        return out

    def casts(self, diffs: Iterable[Difference]) -> dict[str, tuple[Any, str, Location | None, Any]]:
        """path -> (dtype, the side that casts: ``"save"``, ``"load"`` or ``""``, where the checkpoint holds
        the weights, the dtype they train in) for weights whose every difference is exactly the rounding of
        one dtype."""
        out = {}
        for d in diffs:
            if d.kind not in ("module", "tensors") or d.untouched or d.absent or d.diff is None:
                continue
            if d.diff.missing or d.diff.unexpected or d.diff.shape or d.diff.dtype:
                continue
            exp, act = _mapping(self.expected[d.path]), _mapping(self.actual[d.path])
            dtype = cast_round_trip(exp, act)
            if dtype is None:
                continue
            found = weights(self.held, exp) if self.held is not None else None
            side = "" if found is None else "save" if found[1] == dtype else "load"
            own = next(t.dtype for t in exp.values() if isinstance(t, torch.Tensor) and t.is_floating_point())
            out[d.path] = (dtype, side, found[0] if found else None, own)
        return out

    def copies(self, diffs: list[Difference], trained: frozenset[str]) -> dict[str, str]:
        """path of an untrained module or tensor mapping -> the trained module that holds, after load, what it
        held in the uninterrupted run: a copy (taken before the step) that the save wrote as the weights."""
        models = [d for d in diffs if d.kind == "module" and d.path in trained and not d.absent]
        out = {}
        for d in diffs:
            if d.kind not in ("module", "tensors") or d.path in trained or d.absent:
                continue
            exp = _mapping(self.expected[d.path])
            for m in models:
                got = _mapping(self.actual[m.path])
                if exp.keys() == got.keys() and all(same(exp[k], got[k]) for k in exp):
                    out[d.path] = m.path
                    break
        return out

    def position(self, ledger: list[LedgerEntry], at: int) -> tuple[int, Location | None] | None:
        """When the resumed run starts again on batches it already trained on: how many batches of the
        position were lost, and where the checkpoint holds that number (``step``, ``iter_num``), if it does."""
        if not ledger or ledger[0].how != "repeated" or ledger[0].step != at + 1 or ledger[0].seen_at is None:
            return None
        lost = ledger[0].step - ledger[0].seen_at
        return lost, (position(self.held, lost) if self.held is not None else None)


def _mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    return {str(i): v for i, v in enumerate(value)}
