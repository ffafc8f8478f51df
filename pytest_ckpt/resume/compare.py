"""Restore-time comparison, continuation, and the data ledger: pure functions of captured state.

*Expected* is always the uninterrupted run, *actual* the resumed one. Weights and other tensor
mappings go through :func:`pytest_ckpt.api.diff`, so its causes (prefix, layer count, dtype) come
along; everything else is compared leaf by leaf, integers and random states always exactly.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch

from .. import api
from ..compare import values as tensor_values
from ..compare.values import ROUND_TRIP_DTYPES, rounds_through
from .capture import Unreadable, is_python_rng_state

#: leaves kept per difference (the report shows a few; the count says how many there were)
MAX_ITEMS = 8


class _Absent:
    def __repr__(self) -> str:
        return "absent"


#: the value of a key or component one side does not have
ABSENT = _Absent()


@dataclass
class Difference:
    """One component whose state differs; ``items`` are ``(what, expected, actual)`` leaves."""

    path: str
    kind: str
    items: list[tuple[str, Any, Any]] = field(default_factory=list)
    count: int = 0
    #: the weight diff, for modules and tensor mappings, and how many tensors expected holds
    diff: Any = None
    total: int = 0
    #: the optimizer's differences by cause: "empty" {name: keys}, "values" {key: names}, "steps", "groups"
    optimizer: dict = field(default_factory=dict)
    #: restore time only: after load it still holds what ``start`` built
    untouched: bool = False
    #: the side that does not hold this component at all: "resumed" or "uninterrupted" ("" when both do)
    absent: str = ""


@dataclass(frozen=True)
class LedgerEntry:
    """At ``step`` the resumed run trained on the batch the uninterrupted run saw at ``seen_at``
    (``None``: never); ``how`` is ``"repeated"``, ``"skipped"`` or ``"unseen"``."""

    step: int
    seen_at: int | None
    how: str


def compare_states(expected: Mapping[str, Any], actual: Mapping[str, Any], kinds: Mapping[str, str],
                   paths: Iterable[str], *, atol: float = 0.0, rtol: float = 0.0) -> list[Difference]:
    """The components among ``paths`` whose state differs, in the order of ``paths``.

    >>> compare_states({"run.step": 3}, {"run.step": 0}, {"run.step": "counter"}, ["run.step"])[0].items
    [('run.step', 3, 0)]
    """
    out = []
    for path in paths:
        exp, act = expected.get(path, ABSENT), actual.get(path, ABSENT)
        if isinstance(exp, Unreadable) or isinstance(act, Unreadable):
            continue  # listed in not_compared by the check
        d = compare_one(path, kinds[path], exp, act, atol=atol, rtol=rtol)
        if d is not None:
            out.append(d)
    return out


def compare_one(path: str, kind: str, exp: Any, act: Any, *, atol: float, rtol: float) -> Difference | None:
    if act is ABSENT or exp is ABSENT:
        return Difference(path, kind, [(path, _kind_word(exp), _kind_word(act))], 1,
                          absent="resumed" if act is ABSENT else "uninterrupted")
    if kind in ("module", "tensors") and _tensor_mapping(exp) and _tensor_mapping(act):
        exp, act = _as_mapping(exp), _as_mapping(act)
        if exp.keys() == act.keys() and all(same(exp[k], act[k], atol=atol, rtol=rtol) for k in exp):
            return None  # the usual case, without building the two views pc.diff explains with
        d = api.diff(exp, act, atol=atol, rtol=rtol)
        if d.ok:
            return None
        return Difference(path, kind, count=_diff_count(d), diff=d, total=len(exp))
    if kind == "optimizer":
        return _optimizer(path, exp, act, atol, rtol)
    items = list(leaves(exp, act, path if kind in ("counter", "tensor") else "", atol=atol, rtol=rtol))
    if not items:
        return None
    return Difference(path, kind, items[:MAX_ITEMS], len(items))


def without_generator_echoes(diffs: list[Difference], expected: Mapping[str, Any]) -> list[Difference]:
    """``diffs`` less the data or state objects whose only difference is a generator they hold (a loader's
    ``state_dict()["generator"]``): the generator is the cause, named once, on its own path."""
    generators = [d for d in diffs if d.kind == "generator"]

    def echo(d: Difference) -> bool:
        mine = [g for g in generators if g.path.startswith(d.path + ".")]
        if d.kind not in ("data", "state") or not mine or d.count != len(d.items):
            return False
        names = {g.path[len(d.path) + 1:] for g in mine}
        states = [expected.get(g.path) for g in mine]
        return all(where.split(".")[0].split("[")[0] in names or any(same(e, s) for s in states)
                   for where, e, _ in d.items)

    return [d for d in diffs if not echo(d)]


def leaves(exp: Any, act: Any, where: str = "", *, atol: float = 0.0, rtol: float = 0.0):
    """``(where, expected, actual)`` for each leaf that differs (``<absent>`` for a missing key).

    >>> list(leaves({"a": 1, "b": [1.0, 2.0]}, {"a": 1, "b": [1.0, 2.5]}))
    [('b[1]', 2.0, 2.5)]
    """
    if isinstance(exp, Mapping) and isinstance(act, Mapping):
        for k in list(exp) + [k for k in act if k not in exp]:
            sub = f"{where}.{k}" if where else str(k)
            yield from leaves(exp.get(k, ABSENT), act.get(k, ABSENT), sub, atol=atol, rtol=rtol)
        return
    if isinstance(exp, (list, tuple)) and isinstance(act, (list, tuple)) and not is_python_rng_state(exp):
        if len(exp) != len(act):
            yield (f"{where} length" if where else "length", len(exp), len(act))
            return
        for i, (e, a) in enumerate(zip(exp, act)):
            yield from leaves(e, a, f"{where}[{i}]", atol=atol, rtol=rtol)
        return
    if not same(exp, act, atol=atol, rtol=rtol):
        yield (where, exp, act)


def same(exp: Any, act: Any, *, atol: float = 0.0, rtol: float = 0.0) -> bool:
    """Equal leaves: tensors and floats within ``atol + rtol * |expected|`` (exactly by default, nan
    equal to nan); integers, strings and random states always exactly."""
    if isinstance(exp, torch.Tensor) or isinstance(act, torch.Tensor):
        if not (isinstance(exp, torch.Tensor) and isinstance(act, torch.Tensor)):
            return False
        if exp.shape != act.shape or exp.dtype != act.dtype:
            return False
        if exp.device.type == "meta" or act.device.type == "meta":
            return True
        # the weights' comparer: bitwise in one chunked pass by default (NaN equal to NaN)
        return tensor_values.same(exp, act, atol=atol, rtol=rtol)
    np = sys.modules.get("numpy")
    if np is not None and (isinstance(exp, np.ndarray) or isinstance(act, np.ndarray)):
        return (isinstance(exp, np.ndarray) and isinstance(act, np.ndarray) and exp.shape == act.shape
                and exp.dtype == act.dtype and exp.tobytes() == act.tobytes())
    if is_python_rng_state(exp) or is_python_rng_state(act):
        return type(exp) is type(act) and exp == act
    if isinstance(exp, float) and isinstance(act, float):
        if math.isnan(exp) and math.isnan(act):
            return True
        return abs(act - exp) <= atol + rtol * abs(exp) if (atol or rtol) else act == exp
    try:
        return bool(exp == act) and type(exp) is type(act)
    except Exception:  # noqa: BLE001 - an object whose == fails is compared by its text
        return repr(exp) == repr(act)


def cast_round_trip(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> torch.dtype | None:
    """The dtype whose rounding turns ``expected`` into ``actual``: every floating tensor of ``actual`` is
    exactly ``expected`` cast to it and back, at least one differs, and nothing else does.

    >>> w = {"w": torch.tensor([1.0, 1.0001, 3.14159])}
    >>> cast_round_trip(w, {"w": w["w"].half().float()}), cast_round_trip(w, {"w": w["w"] + 1e-3})
    (torch.float16, None)
    """
    if expected.keys() != actual.keys():
        return None
    pairs = [(e, actual[k]) for k, e in expected.items()]
    if not all(isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor) and e.shape == a.shape
               and e.dtype == a.dtype for e, a in pairs):
        return None
    differing = [(e, a) for e, a in pairs if not same(e, a)]
    return next((dtype for dtype in ROUND_TRIP_DTYPES if differing
                 and all(rounds_through(a, e, dtype) for e, a in differing)), None)


def losses_differ(exp: float, act: float, *, atol: float, rtol: float) -> bool:
    return not same(float(exp), float(act), atol=atol, rtol=rtol)


def first_divergence(exp_losses: Sequence[float], act_losses: Sequence[float],
                     exp_batches: Sequence[str | None], act_batches: Sequence[str | None],
                     start: int, *, atol: float, rtol: float) -> tuple[int, str] | None:
    """The first step after ``start`` (steps from 1) whose batch or loss differs: ``(step, "batch"|"loss")``.

    >>> first_divergence([1.0, 0.9, 0.8], [1.0, 0.9, 0.7], [None] * 3, [None] * 3, 1, atol=0, rtol=0)
    (3, 'loss')
    """
    for i in range(start, min(len(exp_losses), len(act_losses))):
        if exp_batches[i] is not None and act_batches[i] is not None and exp_batches[i] != act_batches[i]:
            return i + 1, "batch"
        if losses_differ(exp_losses[i], act_losses[i], atol=atol, rtol=rtol):
            return i + 1, "loss"
    return None


def first_state_divergence(exp_prints: Sequence[Mapping[str, Any]], act_prints: Sequence[Mapping[str, Any]],
                           start: int, paths: Iterable[str]) -> tuple[int, str] | None:
    """The first step > ``start`` after which one of ``paths`` has another fingerprint: ``(step, path)``.

    ``*_prints[s]`` is the fingerprint after step ``s`` (``[0]``: after start).
    """
    paths = list(paths)
    for s in range(start + 1, min(len(exp_prints), len(act_prints))):
        for path in paths:
            if exp_prints[s].get(path) != act_prints[s].get(path):
                return s, path
    return None


def ledger(exp_batches: Sequence[str | None], act_batches: Sequence[str | None], at: int) -> list[LedgerEntry]:
    """Each resumed step that trained on another batch than the uninterrupted run, and where that batch
    was seen (steps from 1; batches are digests, ``None`` when ``step`` returned none).

    >>> ledger(["a", "b", "c", "d"], ["a", "b", "a", "b"], 2)
    [LedgerEntry(step=3, seen_at=1, how='repeated'), LedgerEntry(step=4, seen_at=2, how='repeated')]
    """
    first_seen: dict[str, int] = {}
    for i, b in enumerate(exp_batches):
        if b is not None:
            first_seen.setdefault(b, i + 1)
    out = []
    for i in range(at, min(len(exp_batches), len(act_batches))):
        exp, act = exp_batches[i], act_batches[i]
        if exp is None or act is None or exp == act:
            continue
        seen = first_seen.get(act)
        how = "unseen" if seen is None else ("repeated" if seen < i + 1 else "skipped")
        out.append(LedgerEntry(i + 1, seen, how))
    return out


def matching_step(prints: Sequence[Mapping[str, Any]], path: str, value: Any, before: int) -> int | None:
    """The latest step ``< before`` after which ``path`` had the fingerprint ``value`` (0: after start)."""
    for s in range(min(before, len(prints)) - 1, -1, -1):
        if prints[s].get(path) == value:
            return s
    return None


def _optimizer(path, exp, act, atol, rtol) -> Difference | None:
    es, as_ = exp["state"], act["state"]
    empty: dict[str, list[str]] = {}
    values: dict[str, list[str]] = {}
    steps: list[tuple[str, Any, Any]] = []
    for name, state in es.items():
        got = as_.get(name, {})
        gone = [k for k in state if k not in got]
        if gone:
            empty[name] = gone
        for key in state:
            if key in got and not same(state[key], got[key], atol=atol, rtol=rtol):
                if key == "step":
                    steps.append((name, _number(state[key]), _number(got[key])))
                else:
                    values.setdefault(key, []).append(name)
    extra = [name for name in as_ if name not in es and as_[name]]
    groups = []
    if len(exp["groups"]) != len(act["groups"]):
        groups.append(("param groups", len(exp["groups"]), len(act["groups"])))
    else:
        for i, (eg, ag) in enumerate(zip(exp["groups"], act["groups"])):
            for where, e, a in leaves(eg, ag, atol=atol, rtol=rtol):
                groups.append((f"{where} (group {i})" if len(exp["groups"]) > 1 else where, e, a))
    if not (empty or values or steps or extra or groups):
        return None
    info = {"empty": empty, "values": values, "steps": steps, "extra": extra, "groups": groups,
            "params": list(exp["params"])}
    count = len(empty) + sum(map(len, values.values())) + len(steps) + len(extra) + len(groups)
    return Difference(path, "optimizer", count=count, optimizer=info)


def _tensor_mapping(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(isinstance(v, torch.Tensor) for v in value.values())
    return isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value)


def _as_mapping(value: Any) -> dict[str, torch.Tensor]:
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    return {str(i): v for i, v in enumerate(value)}


def _diff_count(d) -> int:
    return (len(d.missing) + len(d.unexpected) + len(d.shape) + len(d.dtype) + len(d.values) + len(d.ties))


def _number(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _kind_word(value: Any) -> Any:
    return ABSENT if value is ABSENT else type(value).__name__
