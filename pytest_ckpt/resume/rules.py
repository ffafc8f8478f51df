"""Resume notes: one small function per cause, from what the comparison found to one line and a fix.

A difference found right after ``load`` is the cause; a later loss that differs is its consequence
and gets no line of its own. Only when everything compared matched after ``load`` does a later
difference become a cause of its own: data the resumed run took from elsewhere, or hidden state.

Differences after ``load`` that follow from another are folded into its line (:func:`roots`): the
parts of a loader or object whose ``state_dict()`` was not restored into that owner; a batch fetched
ahead from a random stream that was not restored into that stream; state derived from a counter
(the data position, a batch chosen by ``iter_num``) into that counter; a copy of the weights into the
model the save wrote it for. The root is named first, its consequences after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Mapping

import torch

from ..checkpoint.notes import Note
from ..compare.rules.context import plural
from .compare import ABSENT, Difference, LedgerEntry
from .coverage import Coverage
from .streams import SAVE_RESTORE

#: names shown in a note before "..."
SHOW_NAMES = 3
#: state_dict keys as a person says them
FRIENDLY = {"_last_lr": "lr", "_step_count": "step count", "_growth_tracker": "growth tracker",
            "base_lrs": "base lrs"}


@dataclass
class Findings:
    """What the comparison of one resume point found; the input of every rule."""

    at: int
    steps: int
    #: components whose state differs right after load (the causes)
    restore: list[Difference] = field(default_factory=list)
    #: components whose final state differs
    final: list[Difference] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    #: the first resumed step that differs and in what: "loss", "batch" or a component's path
    divergence: tuple[int, str] | None = None
    #: path -> kind of everything compared
    compared: Mapping[str, str] = field(default_factory=dict)
    #: path -> class name (``AdamW``, ``LambdaLR``)
    classes: Mapping[str, str] = field(default_factory=dict)
    #: module paths one of the run's optimizers trains
    trained: frozenset[str] = frozenset()
    #: module path -> the earlier step of the uninterrupted run whose weights it holds after load
    behind: Mapping[str, int] = field(default_factory=dict)
    #: path -> where the checkpoint holds its state (a :class:`~.saved.Location`), ``None``: nowhere; absent: unknown
    saved: Mapping[str, Any] = field(default_factory=dict)
    #: module path -> (where the checkpoint holds its weights, the wrapper prefixes their names carry)
    prefixes: Mapping[str, tuple[tuple, tuple[str, ...]]] = field(default_factory=dict)
    #: resumed on another world size: the samples the resumed ranks did not cover exactly once
    coverage: list[Coverage] = field(default_factory=list)
    #: (the world size that saved, the world size that resumed), when they differ
    ranks: tuple[int, int] | None = None
    #: paths whose state right after load changes with the seed the resumed run starts from: load did not
    #: set them (a stream it does not restore, a batch drawn from one)
    seeded: frozenset[str] = frozenset()
    #: the data pipeline's own bookkeeping (a DataLoader iterator's batch count, a sampler's cursor)
    bookkeeping: frozenset[str] = frozenset()
    #: weights path -> (the dtype every difference is the rounding of, the side that casts: "save", "load"
    #: or "", where the checkpoint holds the weights)
    casts: Mapping[str, tuple] = field(default_factory=dict)
    #: path of a copy of the weights -> the trained module that holds, after load, what the copy held
    copies: Mapping[str, str] = field(default_factory=dict)
    #: path -> (where the checkpoint holds the state it has after load, True; or a state of its make, False)
    resumed_at: Mapping[str, tuple] = field(default_factory=dict)
    #: the resumed run restarts on batches it trained on: (how many batches were lost, where the checkpoint
    #: holds that number, or None)
    position: tuple[int, Any] | None = None
    #: the names in the checkpoint directory (empty for a file): who wrote it, in its own words
    files: tuple[str, ...] = ()

    def of_kind(self, *kinds: str) -> list[Difference]:
        """Differences after load of these component kinds, among components both runs hold."""
        return [d for d in self.restore if d.kind in kinds and not d.absent]

    def causes(self, *kinds: str) -> list[Difference]:
        """:meth:`of_kind` less the differences another one explains (its consequences, see :func:`roots`)."""
        return [d for d in self.of_kind(*kinds) if d.path not in self.roots]

    @cached_property
    def roots(self) -> dict[str, str]:
        """path of a difference after load -> the path of the difference it follows from."""
        return roots(self)

    @cached_property
    def story_root(self) -> str | None:
        """The difference the data ledger follows from, whose note tells it (``None``: a note of its own)."""
        return _story_root(self, self.roots)

    def folded(self, root: str) -> list[Difference]:
        """The differences that follow from ``root``."""
        return [d for d in self.restore if self.roots.get(d.path) == root]


#: the note kind for each component kind
NOTE_KIND = {"module": "resume-weights", "tensors": "resume-weights", "tensor": "resume-weights",
             "optimizer": "resume-optimizer", "scheduler": "resume-scheduler", "scaler": "resume-scaler",
             "generator": "resume-rng", "global-rng": "resume-rng", "data": "resume-data",
             "counter": "resume-counter", "state": "resume-state", "config": "resume-state"}
#: the root of the differences the data ledger explains (a sampler's cursor, a generator back at the epoch start)
DATA = "the data position"
#: kinds of state that may follow a counter (a batch chosen by iter_num)
FOLLOWS_COUNTER = ("tensor", "tensors", "data", "state", "generator")


def roots(f: Findings) -> dict[str, str]:
    """path of a difference after load -> the path of the root it follows from (:data:`DATA`: the data
    position the batches show). Each link is evidence, not a guess:

    - inside an owner: a generator or counter inside a loader or object whose ``state_dict()`` differs;
    - a copy: an untrained module that held, in the uninterrupted run, what the trained one holds after load;
    - a counter: a component that holds after load its state from as many steps back as the counter is off;
    - a random stream not restored: a tensor or loader whose state after load changes with the seed the
      resumed run starts from (drawn from the stream, not set by load);
    - the data position: bookkeeping, and a generator back at the state from which the resumed run's
      first batch repeats an earlier one (the epoch's order drawn again).
    """
    out: dict[str, str] = {}
    diffs = [d for d in f.restore if not d.absent]
    for owner in diffs:
        if owner.kind in ("data", "state") and owner.path not in f.bookkeeping:
            for d in diffs:
                if d is not owner and _inside(d.path, owner.path):
                    out.setdefault(d.path, owner.path)
    for copy, model in f.copies.items():
        out.setdefault(copy, model)
    for c, delta in _counters(f):
        for d in diffs:
            if (d.path not in out and d is not c and d.kind in FOLLOWS_COUNTER and d.path not in f.bookkeeping
                    and f.behind.get(d.path) == f.at + delta):  # from as many steps back as the counter is off
                out[d.path] = c.path
    for d in diffs:
        if d.path not in out and ((d.path in f.bookkeeping and f.ledger) or _replays(f, d)):
            out[d.path] = DATA
    stream = _rng_root(f, out)
    if stream is not None:
        for d in diffs:
            if d.path not in out and d.kind in ("tensor", "tensors", "data", "state") and d.path in f.seeded:
                out[d.path] = stream.path
    return out


def _inside(path: str, owner: str) -> bool:
    return path.startswith(owner + ".") or path.startswith(owner + "[")


def _counters(f: Findings) -> list[tuple[Difference, int]]:
    """The integer counters that differ after load, each with how far it is off (resumed - uninterrupted)."""
    out = []
    for d in f.of_kind("counter"):
        _, e, a = d.items[0]
        if d.path not in f.bookkeeping and type(e) is int and type(a) is int:
            out.append((d, a - e))
    return out


def _not_restored(f: Findings, d: Difference) -> bool:
    return d.untouched or d.path in f.seeded


def _rng_root(f: Findings, out: Mapping[str, str]) -> Difference | None:
    """The first random stream or generator that load does not restore and nothing else explains."""
    return next((d for d in f.of_kind("global-rng", "generator")
                 if d.path not in out and _not_restored(f, d)), None)


def _replays(f: Findings, d: Difference) -> bool:
    """A generator back at its state after step k, while the resumed run's first batch is the one of step
    k + 1: the loader draws the epoch's order again from it; the position in the epoch is what was lost."""
    step = f.behind.get(d.path)
    first = f.ledger[0] if f.ledger else None
    return (d.kind == "generator" and step is not None and first is not None and first.how == "repeated"
            and first.step == f.at + 1 and first.seen_at == step + 1)


def _story_root(f: Findings, out: Mapping[str, str]) -> str | None:
    if not f.ledger:
        return None
    for c, delta in _counters(f):  # each other batch comes from as many steps away as the counter is off
        seen = [e for e in f.ledger if e.seen_at is not None]  # (a batch past the end was never seen)
        if c.path not in out and seen and seen[0] is f.ledger[0] and all(e.seen_at - e.step == delta for e in seen):
            return c.path
    data = [d for d in f.of_kind("data") if d.path not in out and d.path not in f.bookkeeping]
    if data:
        return data[0].path
    if _reshuffled(f):  # a reshuffle is what an RNG left behind does to the data: its consequence
        stream = next((d for d in f.of_kind("global-rng", "generator") if d.path not in out), None)
        if stream is not None:
            return stream.path
    return None


def absent(f: Findings) -> list[Note]:
    """A component one of the two runs holds and the other does not, right after load."""
    notes = []
    for d in f.restore:
        if not d.absent:
            continue
        _, exp, act = d.items[0]
        if d.absent == "resumed":
            text = (f"{d.path} is not in the run after load (the uninterrupted run holds "
                    f"{_article(f.classes.get(d.path) or str(exp))} there after step {f.at})")
            fix = f"make start build {d.path}, or save it with the checkpoint and set it back in your load"
        else:
            text = f"{d.path} is in the run after load, but not in the uninterrupted run after step {f.at}"
            fix = f"restore into the run start built; do not add {d.path} in your load"
        notes.append(Note(NOTE_KIND.get(d.kind, "resume-state"), text, fix, (d.path,)))
    return notes


def weights(f: Findings) -> list[Note]:
    """Modules, tensors and tensor mappings (an EMA) that differ after load."""
    notes = []
    optimizer_steps_differ = any(d.optimizer.get("steps") for d in f.of_kind("optimizer"))
    for d in f.causes("module", "tensors", "tensor"):
        ema = d.kind != "module" or d.path not in f.trained
        what = _what(f, d)
        if d.path in f.casts:
            notes.append(_cast(f, d))
            continue
        if d.kind == "tensor" and d.path in f.seeded and not d.untouched:
            notes.append(Note("resume-weights", f"{what} differs after load: it is drawn from a random stream "
                              f"(it changes with the seed the resumed run starts from) before your load restores it",
                              f"draw {d.path} after restoring the random state in your load, or save it with the "
                              f"checkpoint and copy it back", (d.path,)))
            continue
        if d.untouched:
            held = ("it holds" if d.kind == "tensor" or d.total == 1 else "they hold") + " what start built"
            text = (f"{what} is not restored: after load {held}" if d.kind == "tensor" else
                    f"{what} is not restored: none of its {plural(d.total, 'tensor')} was restored (after load {held})")
            if ema:
                clause, fix = _saved(f, d, f"copy it back into {d.path} in your load",
                                     f"save {d.path} with the checkpoint and copy it back in your load")
                text += clause
            else:
                fix = ("load the weights strictly (model.load_state_dict(state), or pc.load_into(model, path)): "
                       "a strict=False load whose names all miss (a 'module.' or '_orig_mod.' prefix) loads "
                       "nothing and says nothing")
                located, stripped = f.prefixes.get(d.path, ((), ()))
                if stripped:
                    text += (f"; the checkpoint's weights{_at(located)} carry the prefix {''.join(stripped)!r}, "
                             f"which the model's names do not")
                    fix = (f"strip {''.join(stripped)!r} from the names before loading (or pc.load_into(model, "
                           f"path), which does), and load strictly")
            notes.append(Note("resume-weights", text, fix, _names(d)))
            continue
        step = f.behind.get(d.path)
        if step is not None and not optimizer_steps_differ:
            late = "one step" if f.at - step == 1 else f"{f.at - step} steps"
            when = "before step 1" if step == 0 else f"after step {step}"
            if ema:
                text = (f"{what} holds what it was {when}, not after step {f.at}: it was saved {late} behind "
                        f"the rest of the run")
                fix = f"save {d.path} at the same point as the rest of the checkpoint, after the step updates it"
            else:
                text = (f"{what} holds the weights {when}, not the weights after step {f.at}, while the optimizer's step "
                        f"counts match: the weights were saved {late} behind the optimizer (before the last "
                        f"optimizer step)")
                fix = "save the weights and the optimizer state at the same point, after optimizer.step()"
                copies = [c.path for c in f.folded(d.path)]
                if copies:
                    text += (f"; they are what {_and(copies)} held after step {f.at}, a copy taken before the step, "
                             f"which your save wrote as the weights")
                    fix = f"save {d.path}'s own state_dict(), not {_and(copies)}, after optimizer.step()"
            notes.append(Note("resume-weights", text, fix, _names(d)))
            continue
        if d.diff is None:  # a single tensor
            gap = _gap(d.items[0][1], d.items[0][2]) if d.items else ""
            notes.append(Note("resume-weights", f"{what} differs after load{gap}",
                              f"save {d.path} with the checkpoint and restore it in your load", (d.path,)))
            continue
        for n in d.diff.notes:
            if n.info:
                continue
            if n.kind == "values":
                worst = max(d.diff.values.items(), key=lambda kv: kv[1])
                text = (f"{what}: {len(d.diff.values)} of {plural(d.total, 'tensor')} differ after load "
                        f"(largest |diff| {_fmt(worst[1])} at {worst[0]})")
                fix = (f"restore {d.path} from the state saved with the rest of the checkpoint "
                       f"(the same step)")
                notes.append(Note("resume-weights", text, fix, tuple(sorted(d.diff.values))))
            else:
                notes.append(Note("resume-weights", f"{what} after load: {n.text}", n.fix, n.names))
    return notes


def optimizer(f: Findings) -> list[Note]:
    """Per-parameter state by parameter name, step counts, param-group hyperparameters."""
    notes = []
    for d in f.causes("optimizer"):
        o = d.optimizer
        parts = []
        if o["empty"]:
            keys = _unique(k for ks in o["empty"].values() for k in ks)
            parts.append(f"{_and(keys)} of {plural(len(o['empty']), 'parameter')} "
                         f"({_list(o['empty'])}) {'is' if len(o['empty']) == 1 else 'are'} empty after load")
        for key, names in o["values"].items():
            parts.append(f"{key} of {plural(len(names), 'parameter')} ({_list(names)}) "
                         f"differ{'s' if len(names) == 1 else ''} after load")
        if o["steps"]:
            name, e, a = o["steps"][0]
            parts.append(f"step count {_fmt(a)} (uninterrupted: {_fmt(e)})")
        if o["extra"]:
            parts.append(f"{plural(len(o['extra']), 'parameter')} ({_list(o['extra'])}) hold state the "
                         f"uninterrupted run's do not")
        for where, e, a in o["groups"][:SHOW_NAMES]:
            parts.append(f"{_friendly(where)} {_fmt(a)} (uninterrupted: {_fmt(e)})")
        cls = f.classes.get(d.path, "optimizer")
        head = f"{d.path} ({cls}) {'state not restored' if d.untouched else 'differs after load'}"
        clause, fix = "", "save the optimizer state at the same step as the weights and load all of it in your resume"
        if d.untouched:
            clause, fix = _saved(f, d, "load it with optimizer.load_state_dict(checkpoint{at}) in your resume",
                                 "save optimizer.state_dict() in your save and load it with "
                                 "optimizer.load_state_dict() in your resume")
        notes.append(Note("resume-optimizer", f"{head}: {'; '.join(parts)}{clause}", fix,
                          tuple(o["empty"]) or tuple(n for ns in o["values"].values() for n in ns)))
    return notes


def scheduler(f: Findings) -> list[Note]:
    return [_component_note(f, d, "resume-scheduler", "scheduler",
                            "the optimizer's lr alone does not carry the schedule's position")
            for d in f.causes("scheduler")]


def scaler(f: Findings) -> list[Note]:
    return [_component_note(f, d, "resume-scaler", "scaler") for d in f.causes("scaler")]


def rng(f: Findings) -> list[Note]:
    """A global stream or a generator the run holds that is not where it was."""
    notes = []
    for d in f.causes("global-rng", "generator"):
        if d.kind == "global-rng":
            save, restore = SAVE_RESTORE[d.path]
            name = f"the global {d.path} RNG"
            load_fix = f"restore it with {restore.replace('...', 'checkpoint{at}')} in your load"
            save_fix = f"save {save} with the checkpoint and restore it with {restore} in your load"
        else:
            name = f"{d.path} ({f.classes.get(d.path, 'generator')})"
            load_fix = f"restore {d.path}'s state from checkpoint{{at}} in your load"
            save_fix = f"save {d.path}'s state with the checkpoint and restore it in your load"
        step = f.behind.get(d.path)
        if _not_restored(f, d):
            how = ("is not restored: after load it is where start left it" if d.untouched else
                   "is not restored: after load it is where start and your load's own draws left it (it changes "
                   "with the seed the resumed run starts from)")
            clause, fix = _saved(f, d, load_fix, save_fix)
            if clause == NOT_SAVED and d.path in f.resumed_at:
                loc, exact = f.resumed_at[d.path]
                clause = (f"; the checkpoint holds the state it has after load at {loc}, not its state after step "
                          f"{f.at}" if exact else f"; the checkpoint holds a state of it at {loc}, from another time")
        else:
            how = (f"holds after load its state {_when(step)}, not after step {f.at}" if step is not None else
                   f"holds another state after load than the uninterrupted run's after step {f.at}")
            clause = ""
            fix = (f"save {d.path if d.kind != 'global-rng' else name}'s state at the same point as the rest of the "
                   f"checkpoint, and restore it in your load")
            if d.path in f.resumed_at:
                loc, exact = f.resumed_at[d.path]
                clause = (f"; your load restores it from {loc}, which holds that state" if exact else
                          f"; the checkpoint's state of it at {loc} is from another time")
        drawn = f.folded(d.path)
        consequences = []
        if drawn:
            paths = _and([c.path for c in drawn])
            consequences.append(f"{paths}, drawn from it, differ{'s' if len(drawn) == 1 else ''} after load too")
            before = [c.path for c in drawn if c.untouched]
            fix += (f", before your load draws {paths}" if not before else f"; save {_and(before)} with the "
                    f"checkpoint too (start draws it before load can restore the stream)")
        if f.story_root == d.path:
            consequences.append(_data_consequence(f))
        text = f"{name} {how}{clause}" + (f"; consequence: {'; '.join(consequences)}" if consequences else "")
        notes.append(Note("resume-rng", text, fix, (d.path,)))
    return notes


def data(f: Findings) -> list[Note]:
    """The data position: a loader's or sampler's state after load, and the batches the resumed run took."""
    notes = []
    story = _data_consequence(f)
    for d in f.causes("data"):
        if d.path in f.bookkeeping:
            continue  # its batches tell its position: a hint only when nothing else explains (see explain)
        parts = [c.path for c in f.folded(d.path)]
        about = [f.classes.get(d.path, "")] + ([f"with {_and(parts)} inside it"] if parts else [])
        about_text = ", ".join(a for a in about if a)
        if d.untouched:  # the owner, named as itself, above the generator inside it
            clause, fix = _saved(f, d, f"load it with {d.path}.load_state_dict(checkpoint{{at}}) in your load",
                                 _DATA_FIX)
            name = f"{d.path} ({about_text})" if about_text else d.path
            head = f"{name} is not restored: its position is {_items(d)} after load{clause}"
        else:
            fix = _DATA_FIX
            head = f"{d.path}'s position differs after load: {_items(d)}" + (
                f" (with {_and(parts)} inside it)" if parts else "")
        if f.story_root == d.path and story:
            head += f"; {story}"
        notes.append(Note("resume-data", head, fix, (d.path,)))
    if story and f.story_root is None:  # nothing else explains it: the data is the cause
        text = story[0].upper() + story[1:]
        replayed = [d for d in f.folded(DATA) if d.kind == "generator"]
        for g in replayed:
            text += (f"; {_what(f, g)} is back at its state {_when(f.behind[g.path])}"
                     f"{_held(f, g)}, so the epoch's order is drawn again from its first batch")
        notes.append(Note("resume-data", text, _position_fix(f)))
    return notes


def position_hint(f: Findings) -> list[Note]:
    """The data pipeline's bookkeeping differs and the batches cannot tell: only when nothing else explains."""
    books = [d for d in f.causes("data", "counter") if d.path in f.bookkeeping]
    if not books or f.ledger:
        return []
    d = books[0]
    return [Note("resume-data", f"{d.path} differs after load: {_items(d)}, and step returns no batch to tell "
                                f"whether the data position is lost", _position_fix(f) + "; return (loss, batch) "
                                "from step so the check can follow the batches", (d.path,))]


def _position_fix(f: Findings) -> str:
    if f.position is not None:
        lost, loc = f.position
        where = f" (the checkpoint holds {lost} at {loc})" if loc is not None else ""
        return (f"skip the {lost} batch{'es' if lost != 1 else ''} already done{where} when your load builds the "
                f"loader again, as a sampler that skips the done batches does, or save and load the loader's "
                f"state_dict()")
    return _DATA_FIX


def _held(f: Findings, d: Difference) -> str:
    loc = f.resumed_at.get(d.path)
    return f", as the checkpoint holds it at {loc[0]}" if loc and loc[1] else ""


def ranks_data(f: Findings) -> list[Note]:
    """Resumed on another world size, the ranks together repeat or skip samples of the global batches."""
    if not f.coverage or f.ranks is None:
        return []
    saved, resumed = f.ranks
    groups = {how: [c for c in f.coverage if c.how == how] for how in ("repeated", "unseen", "skipped")}
    ranks = sorted({r for c in f.coverage for _, r in c.seen})
    one = len(ranks) == 1
    parts = []
    for how, words in (("repeated", "train again on"), ("unseen", "train on")):
        found = groups[how]
        if not found:
            continue
        if how == "repeated":
            shown = "; ".join(f"{_sample(c)} at {_and([f'step {s} on rank {r}' for s, r in c.seen])}"
                              for c in found[:SHOW_NAMES]) + (", ..." if len(found) > SHOW_NAMES else "")
            parts.append(f"{_verb(words, one)} {plural(len(found), 'sample')} ({shown})")
        else:
            steps = sorted({s for c in found for s, _ in c.seen})
            on = sorted({r for c in found for _, r in c.seen})
            parts.append(f"{_verb(words, one)} {plural(len(found), 'sample')} the uninterrupted run never trained "
                         f"on (at {'step' if len(steps) == 1 else 'steps'} {_and([str(s) for s in steps])} on "
                         f"{'rank' if len(on) == 1 else 'ranks'} {_and([str(r) for r in on])})")
    if groups["skipped"]:
        found = groups["skipped"]
        shown = ", ".join(_sample(c) for c in found[:SHOW_NAMES]) + (", ..." if len(found) > SHOW_NAMES else "")
        parts.append(f"{_verb('skip', one)} {plural(len(found), 'sample')} ({shown})")
    who = f"{'rank' if one else 'ranks'} {_and([str(r) for r in ranks])}" if ranks else "the ranks"
    text = (f"the data position does not carry from {saved} to {resumed} ranks: over steps {f.at + 1}-{f.steps} "
            f"{who} {_and(parts)}, against the uninterrupted run's global batches")
    fix = ("save the data position as the samples consumed by all ranks together (a global offset), and give "
           "each rank its part of every global batch for the world size it resumes on (as DistributedSampler("
           "num_replicas=world size, rank=rank) does from that offset): a per-rank position names other "
           "samples on another number of ranks")
    return [Note("resume-data", text, fix, tuple(f"rank {r}" for r in ranks))]


def _verb(words: str, one: bool) -> str:
    first, _, rest = words.partition(" ")
    return f"{first}s {rest}".rstrip() if one else words


def _sample(c: Coverage) -> str:
    # only repeated and skipped samples are named: the uninterrupted run saw them
    return f"sample {c.sample} of step {c.step}"


def counter(f: Findings) -> list[Note]:
    notes = []
    for d in f.causes("counter"):
        if d.path in f.bookkeeping:
            continue
        _, e, a = d.items[0]
        if isinstance(e, list) or isinstance(a, list):
            what = f"{d.path} holds {_fmt(a)} after load (uninterrupted: {_fmt(e)})"
        else:
            what = f"{d.path} is {_fmt(a)} after load (uninterrupted: {_fmt(e)})"
        clause, fix = _saved(f, d, f"set {d.path} back from checkpoint{{at}} in your load",
                             f"save {d.path} with the checkpoint and set it back in your load")
        loc = f.saved.get(d.path)
        if d.untouched:
            what += f": not restored{clause}"
        elif loc is not None and type(e) is int and type(a) is int:
            off = "one" if abs(a - e) == 1 else str(abs(a - e))
            what += f": restored off by {off} ({a - e:+d}); the checkpoint holds {e} at {loc}"
            fix = (f"set {d.path} = {loc.ref} in your load, as saved (not {loc.ref} {'+' if a > e else '-'} "
                   f"{abs(a - e)})") + _file(loc)
        elif clause == NOT_SAVED:
            what += clause
        folded = f.folded(d.path)
        if folded:
            one = len(folded) == 1
            what += (f"; {_and([c.path for c in folded])} {'holds its' if one else 'hold their'} state "
                     f"{_when(f.behind[folded[0].path])} too, as {d.path} says")
        if f.story_root == d.path:
            what += f"; consequence: the data position follows it: {_data_consequence(f)}"
        notes.append(Note("resume-counter", what, fix, (d.path,)))
    return notes


def state(f: Findings) -> list[Note]:
    return [_component_note(f, d, "resume-state", d.path) for d in f.causes("state")]


def config(f: Findings) -> list[Note]:
    """A config the run holds (settings, one component) that load set to other values."""
    return [Note("resume-state", f"{_what(f, d)} differs after load: {_items(d)}",
                 f"build {d.path} in start as the uninterrupted run has it, or restore it whole from the checkpoint",
                 (d.path,)) for d in f.causes("config")]


def hidden_state(f: Findings) -> Note:
    """Everything compared matched after load, yet a later step differs: state the check cannot see."""
    step, what = f.divergence if f.divergence else (None, "the final state")
    shown = list(f.compared)[:6]
    listing = ", ".join(shown) + (f" and {len(f.compared) - len(shown)} more" if len(f.compared) > len(shown) else "")
    where = f"step {step} differs ({what})" if step else "the final state differs"
    text = (f"everything compared matched after load ({listing}), yet {where}: the run holds state "
            f"the check cannot see")
    fix = ("keep every piece of training state in the run returned by start (not in globals, closures or "
           "iterators without state_dict) and save and restore it")
    return Note("resume-hidden-state", text, fix)


#: the rules, in the order their notes are shown (a root before what follows from it)
RULES: list[Callable[[Findings], list[Note]]] = [
    absent, weights, optimizer, scheduler, scaler, rng, counter, data, ranks_data, state, config,
]


def explain(f: Findings) -> list[Note]:
    """Every cause ``f`` shows, one note each; a hint from the data pipeline's bookkeeping, then hidden state,
    only when nothing else explains a difference."""
    notes = [n for rule in RULES for n in rule(f)]
    if not notes:
        notes = position_hint(f)
    if not notes and (f.divergence or f.final):
        notes.append(hidden_state(f))
    return notes


_DATA_FIX = ("save the data position (the loader's or sampler's state_dict(), or the number of batches done "
             "in the epoch) and resume from it in your load")


def _reshuffled(f: Findings) -> bool:
    """The resumed run took other batches, yet not from its first step: the order differs, not the position."""
    return bool(f.ledger) and (f.ledger[0].how == "unseen" or f.ledger[0].step > f.at + 1)


def _data_consequence(f: Findings) -> str:
    """The data ledger in one sentence: where the resumed run's first different batch came from."""
    if not f.ledger:
        return ""
    first, resumed = f.ledger[0], f.steps - f.at
    count = f"; {len(f.ledger)} of {resumed} resumed steps trained on another batch"
    if first.how == "unseen":
        return (f"from step {first.step} the resumed run trains on batches the uninterrupted run never saw "
                f"(reshuffled data){count}")
    if _reshuffled(f):
        return (f"from step {first.step} the resumed run trains on other batches than the uninterrupted run "
                f"(reshuffled data: its batch at step {first.step} is the one the uninterrupted run saw at "
                f"step {first.seen_at}){count}")
    why = ("repeated data: the position restarts" if first.how == "repeated"
           else "skipped data: the position runs ahead")
    return (f"the resumed run trained at step {first.step} on the batch the uninterrupted run saw at step "
            f"{first.seen_at} ({why}){count}")


def _component_note(f: Findings, d: Difference, kind: str, name: str, why: str = "") -> Note:
    """An object restored by ``load_state_dict``: scheduler, scaler, any object with state_dict()."""
    head = f"{_what(f, d)} {'not restored' if d.untouched else 'differs after load'}"
    clause, fix = _saved(f, d, f"load it with {name}.load_state_dict(checkpoint{{at}}) in your resume",
                         f"save {name}.state_dict() in your save and load it with {name}.load_state_dict() "
                         f"in your resume")
    if not d.untouched:
        clause, fix = "", f"save {name}.state_dict() at the same step as the rest and load it in your resume"
    elif clause == NOT_SAVED:
        fix = _accelerate(f, name) or fix
    return Note(kind, f"{head}: {_items(d)}{clause}" + (f" ({why})" if why else ""), fix, (d.path,))


#: the clause of a state the checkpoint does not hold
NOT_SAVED = "; it is not in the checkpoint"


def _saved(f: Findings, d: Difference, load_fix: str, save_fix: str) -> tuple[str, str]:
    """The clause saying whether the checkpoint holds the state, and the fix that follows from it."""
    if d.path not in f.saved:
        return "", save_fix
    loc = f.saved[d.path]
    if loc is None:
        return NOT_SAVED, save_fix
    return f"; the checkpoint holds it at {loc}, but load does not restore it", load_fix.format(at=loc.key) + _file(loc)


#: what accelerate's ``save_state`` writes beside the weights: its RNG states, each registered object
ACCELERATE = re.compile(r"random_states_\d+\.pkl|custom_checkpoint_\d+\.pkl")


def _accelerate(f: Findings, name: str) -> str | None:
    """The fix for an object the checkpoint lacks, in accelerate's words when ``save_state`` wrote it.

    >>> print(_accelerate(Findings(1, 2, files=("model.safetensors", "custom_checkpoint_0.pkl",
    ...                                            "random_states_0.pkl")), "run.ema"))
    accelerator.save_state wrote this checkpoint (custom_checkpoint_0.pkl, model.safetensors, random_states_0.pkl): it saves what prepare() was given and each object passed to accelerator.register_for_checkpointing (custom_checkpoint_N.pkl: 1 here), and run.ema is neither: accelerator.register_for_checkpointing(run.ema) where the run is built, and load_state restores it
    """
    if not any(ACCELERATE.fullmatch(n) for n in f.files):
        return None
    registered = sum(n.startswith("custom_checkpoint_") for n in f.files)
    shown = ", ".join(sorted(f.files)[:6]) + (", ..." if len(f.files) > 6 else "")
    return (f"accelerator.save_state wrote this checkpoint ({shown}): it saves what prepare() was given and each "
            f"object passed to accelerator.register_for_checkpointing (custom_checkpoint_N.pkl: {registered} "
            f"here), and {name} is neither: accelerator.register_for_checkpointing({name}) where the run is built, "
            f"and load_state restores it")


def _file(loc: Any) -> str:
    """Which file ``checkpoint`` is, when the save wrote several."""
    return f" (checkpoint: what {loc.file} holds)" if getattr(loc, "file", "") else ""


def _when(step: int) -> str:
    return "before step 1" if step == 0 else f"after step {step}"


def _cast(f: Findings, d: Difference) -> Note:
    """Weights whose every difference after load is the rounding of a lower precision: a cast on one side."""
    dtype, side, loc, own = f.casts[d.path]
    low, high = str(dtype).replace("torch.", ""), str(own).replace("torch.", "")
    n = len(d.diff.values) if d.diff is not None else d.count
    text = (f"{_what(f, d)}: every difference after load is the {low} rounding of the uninterrupted run's "
            f"weights ({n} of {plural(d.total, 'tensor')})")
    trained = d.path in f.trained
    if side == "save":
        text += f": your save casts them to {low} (the checkpoint holds them as {low} at {loc})"
        fix = (f"save the weights in the dtype they train in ({high}) in the checkpoint you resume from; keep a "
               f"{low} copy apart for inference")
    elif side == "load":
        text += f": your load casts them to {low} and back (the checkpoint holds them as {high} at {loc})"
        fix = f"load the weights without casting them (no .half() or .to(torch.{low}) on the model or its state dict)"
    else:
        text += f": your save or your load rounds them through {low}"
        fix = f"keep the weights in {high} from save to load (no .half() or .to(torch.{low}) on either side)"
    if trained:
        text += f"; resume restarts from rounded weights while the {high} optimizer moments carry on"
    return Note("resume-weights", text, fix, _names(d))


def _what(f: Findings, d: Difference) -> str:
    cls = f.classes.get(d.path)
    return f"{d.path} ({cls})" if cls and cls not in ("dict", "list", "tuple", "Tensor") else d.path


def _items(d: Difference) -> str:
    parts = [f"{_friendly(w) or 'value'} {_fmt(a)} (uninterrupted: {_fmt(e)})" for w, e, a in d.items[:SHOW_NAMES]]
    more = d.count - len(parts)
    return ", ".join(parts) + (f", and {more} more" if more > 0 else "")


def _gap(exp: Any, act: Any) -> str:
    if isinstance(exp, torch.Tensor) and isinstance(act, torch.Tensor) and exp.shape == act.shape \
            and exp.is_floating_point() and act.is_floating_point() and exp.numel():
        return f" (largest |diff| {_fmt((act.double() - exp.double()).abs().max().item())})"
    return f": {_fmt(act)} (uninterrupted: {_fmt(exp)})"


def _friendly(where: str) -> str:
    head, sep, rest = where.partition("[")
    return FRIENDLY.get(head, head.lstrip("_").replace("_", " ") if head.startswith("_") else head) + sep + rest


def _fmt(value: Any) -> str:
    if value is ABSENT:
        return "absent"
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return _fmt(value.item())
        return f"a {tuple(value.shape)} tensor"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) <= 3 and all(isinstance(v, (int, float)) for v in value):
            return "[" + ", ".join(_fmt(v) for v in value) + "]"
        return f"{len(value)} items"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(d: Difference) -> tuple[str, ...]:
    if d.diff is not None:
        return tuple(sorted(set(d.diff.values) | set(d.diff.missing) | set(d.diff.dtype) | set(d.diff.shape)))
    return (d.path,)


def _list(names) -> str:
    names = list(names)
    return ", ".join(names[:SHOW_NAMES]) + (", ..." if len(names) > SHOW_NAMES else "")


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))


def _at(located: tuple) -> str:
    return " (at " + "".join(f'["{k}"]' if isinstance(k, str) else f"[{k}]" for k in located) + ")" if located else ""


def _article(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"
