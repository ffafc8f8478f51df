"""Resume notes: one small function per cause, from what the comparison found to one line and a fix.

A difference found right after ``load`` is the cause; a later loss that differs is its consequence
and gets no line of its own. Only when everything compared matched after ``load`` does a later
difference become a cause of its own: data the resumed run took from elsewhere, or hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    #: path -> where the checkpoint holds its state (``'["optimizer"]'``), ``None``: nowhere; absent: unknown
    saved: Mapping[str, str | None] = field(default_factory=dict)
    #: module path -> (where the checkpoint holds its weights, the wrapper prefixes their names carry)
    prefixes: Mapping[str, tuple[tuple, tuple[str, ...]]] = field(default_factory=dict)
    #: resumed on another world size: the samples the resumed ranks did not cover exactly once
    coverage: list[Coverage] = field(default_factory=list)
    #: (the world size that saved, the world size that resumed), when they differ
    ranks: tuple[int, int] | None = None

    def of_kind(self, *kinds: str) -> list[Difference]:
        """Differences after load of these component kinds, among components both runs hold."""
        return [d for d in self.restore if d.kind in kinds and not d.absent]


#: the note kind for each component kind
NOTE_KIND = {"module": "resume-weights", "tensors": "resume-weights", "tensor": "resume-weights",
             "optimizer": "resume-optimizer", "scheduler": "resume-scheduler", "scaler": "resume-scaler",
             "generator": "resume-rng", "global-rng": "resume-rng", "data": "resume-data",
             "counter": "resume-counter", "state": "resume-state"}


def absent(f: Findings) -> list[Note]:
    """A component one of the two runs holds and the other does not, right after load."""
    notes = []
    for d in f.restore:
        if not d.absent:
            continue
        _, exp, act = d.items[0]
        if d.absent == "resumed":
            text = (f"{d.path} is not in the run after load (the uninterrupted run holds "
                    f"{_article(exp)} there after step {f.at})")
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
    for d in f.of_kind("module", "tensors", "tensor"):
        ema = d.kind != "module" or d.path not in f.trained
        what = _what(f, d)
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
    for d in f.of_kind("optimizer"):
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
            for d in f.of_kind("scheduler")]


def scaler(f: Findings) -> list[Note]:
    return [_component_note(f, d, "resume-scaler", "scaler") for d in f.of_kind("scaler")]


def rng(f: Findings) -> list[Note]:
    """A global stream or a generator the run holds that is not where it was."""
    notes = []
    # a reshuffle is what an RNG left behind does to the data: its consequence, not another cause
    consequence = _data_consequence(f) if _reshuffled(f) and not f.of_kind("data") else ""
    for d in f.of_kind("global-rng", "generator"):
        if d.kind == "global-rng":
            save, restore = SAVE_RESTORE[d.path]
            name = f"the global {d.path} RNG"
            load_fix = f"restore it with {restore.replace('...', 'checkpoint{at}')} in your load"
            save_fix = f"save {save} with the checkpoint and restore it with {restore} in your load"
        else:
            name = f"{d.path} ({f.classes.get(d.path, 'generator')})"
            load_fix = f"restore {d.path}'s state from checkpoint{{at}} in your load"
            save_fix = f"save {d.path}'s state with the checkpoint and restore it in your load"
        clause, fix = _saved(f, d, load_fix, save_fix)
        how = ("is not restored: after load it is where start left it" if d.untouched else
               f"holds another state after load than the uninterrupted run's after step {f.at} "
               f"(saved at another time?)")
        text = f"{name} {how}{clause if d.untouched else ''}"
        if consequence:
            text, consequence = f"{text}; consequence: {consequence}", ""
        notes.append(Note("resume-rng", text, fix, (d.path,)))
    return notes


def data(f: Findings) -> list[Note]:
    """The data position: a loader's or sampler's state after load, and the batches the resumed run took."""
    notes = []
    differing = f.of_kind("data")
    story = _data_consequence(f)
    for d in differing:
        clause, _ = _saved(f, d, "", "")
        text = (f"{d.path}'s position is not restored: {_items(d)} after load{clause}"
                if d.untouched else f"{d.path}'s position differs after load: {_items(d)}")
        if story:
            text, story = f"{text}; {story}", ""
        notes.append(Note("resume-data", text, _DATA_FIX, (d.path,)))
    explained_by_rng = _reshuffled(f) and f.of_kind("global-rng", "generator")
    if story and not explained_by_rng:  # nothing else explains it: the data is the cause
        notes.append(Note("resume-data", story[0].upper() + story[1:], _DATA_FIX))
    return notes


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
    for d in f.of_kind("counter"):
        _, e, a = d.items[0]
        if isinstance(e, list) or isinstance(a, list):
            what = f"{d.path} holds {_fmt(a)} after load (uninterrupted: {_fmt(e)})"
        else:
            what = f"{d.path} is {_fmt(a)} after load (uninterrupted: {_fmt(e)})"
        clause, fix = _saved(f, d, f"set {d.path} back from checkpoint{{at}} in your load",
                             f"save {d.path} with the checkpoint and set it back in your load")
        if d.untouched:
            what += f": not restored{clause}"
        notes.append(Note("resume-counter", what, fix, (d.path,)))
    return notes


def state(f: Findings) -> list[Note]:
    return [_component_note(f, d, "resume-state", d.path) for d in f.of_kind("state")]


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


#: the rules, in the order their notes are shown
RULES: list[Callable[[Findings], list[Note]]] = [
    absent, weights, optimizer, scheduler, scaler, rng, data, ranks_data, counter, state,
]


def explain(f: Findings) -> list[Note]:
    """Every cause ``f`` shows, one note each; hidden state only when nothing else explains a difference."""
    notes = [n for rule in RULES for n in rule(f)]
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
    return Note(kind, f"{head}: {_items(d)}{clause}" + (f" ({why})" if why else ""), fix, (d.path,))


def _saved(f: Findings, d: Difference, load_fix: str, save_fix: str) -> tuple[str, str]:
    """The clause saying whether the checkpoint holds the state, and the fix that follows from it."""
    if d.path not in f.saved:
        return "", save_fix
    at = f.saved[d.path]
    if at is None:
        return "; it is not in the checkpoint", save_fix
    return f"; the checkpoint holds it at {at}, but load does not restore it", load_fix.format(at=at)


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
