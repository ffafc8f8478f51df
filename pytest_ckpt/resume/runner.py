"""Running the project's own training functions: each call checked, each failure named after its function.

A :class:`Trace` is what one run leaves for the comparison: losses, batch digests, a fingerprint of
the state after every step, and snapshots where asked. :func:`resumed_half` is the same in this
process and in a fresh one (``pytest_ckpt.resume.child``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from ..errors import CheckpointError, ResumeError
from ..report import progress
from . import streams as global_streams
from .capture import digest, fingerprint, fingerprints
from .capture import snapshot as take_snapshot
from .state import RunState, classes, run_state, unwrap
from .wrapped import wrapper_cause

#: the seed every global stream gets before the uninterrupted runs and the interrupted run's first half
SEED = 1234
#: the seed before the resumed half's start: state that load does not restore cannot match by chance
POISON = 987654321
#: another such seed: what load sets does not change with it, what load leaves or draws does
OTHER_POISON = 55555


@dataclass
class Functions:
    """The project's code under test, and how the check runs it.

    ``wrap``: applied to every top-level module of the run that one of its optimizers trains once the
    run is built: right after ``start`` for a fresh run, after ``load`` returns for a resumed one (``load``
    always meets the bare modules, as real projects restore before they wrap: API §4.1);
    ``torch.compile``, ``DistributedDataParallel``, FSDP2's ``fully_shard``. The wrapped module is put
    back where the run held it, and the optimizers follow parameters the wrapper replaced.
    """

    start: Callable
    step: Callable
    save: Callable
    load: Callable
    config: Any = None
    wrap: Callable | None = None
    #: paths (and global streams) left out on purpose: never read, never compared (``ignore=``)
    ignore: tuple[str, ...] = ()

    def observe(self, run: Any, streams: tuple[str, ...]) -> RunState:
        """The components of ``run`` the check reads: ``run_state`` less what ``ignore`` names."""
        return run_state(run, streams=streams).without(self.ignore)


@dataclass
class Trace:
    """What one run of the project's code left: steps counted from 1; ``prints[s]`` is after step ``s``."""

    losses: list[float] = field(default_factory=list)
    batches: list[str | None] = field(default_factory=list)
    prints: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    trained: frozenset[str] = frozenset()
    #: the global streams some step drew from (their state moved during the step), with ``prints="draws"``
    drawn: set[str] = field(default_factory=set)
    #: each stream's fingerprint after the last step, while no step has drawn from it yet
    watched: dict[str, Any] = field(default_factory=dict, repr=False)
    #: module path -> the prefix its wrapper adds to its names ("_orig_mod.", "module.", ""); in the
    #: resumed run, as load met the module (before the variation wraps it)
    wrappers: dict[str, str] = field(default_factory=dict)
    #: the resumed half: fingerprints right after start, before load
    before_load: dict[str, Any] = field(default_factory=dict)
    #: the paths the run held right after start (a component the step adds is not there)
    started: frozenset[str] = frozenset()
    #: the data pipeline's own bookkeeping (a DataLoader iterator's batch count, a sampler's cursor)
    bookkeeping: frozenset[str] = frozenset()
    #: the paths ``ignore=`` left out
    left_out: frozenset[str] = frozenset()


def name_of(fn: Any) -> str:
    """``module.qualname`` of a function, as the error messages name it."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qualname}" if module else qualname


def call(fn: Callable, args: tuple, doing: str) -> Any:
    """``fn(*args)``; an exception becomes a :class:`ResumeError` naming ``fn`` and what it was doing."""
    try:
        return fn(*args)
    except Exception as exc:
        raise ResumeError(f"{name_of(fn)} raised {type(exc).__name__}: {exc} ({doing})") from exc


def start_run(fns: Functions, seed: int, streams: tuple[str, ...], doing: str, *,
              wrap: bool = True) -> tuple[Any, RunState]:
    """Seed every global stream, ``start``, wrap the trained modules: a run ready to train.
    ``wrap=False``: left bare, for a ``load`` (:func:`load_run` wraps once it returns)."""
    global_streams.seed(streams, seed)
    args = () if fns.config is None else (fns.config,)
    run = call(fns.start, args, doing)
    rs = state_of(run, fns.start, "built", streams, fns.ignore)
    return run, (wrap_trained(fns, run, rs, streams) if wrap else rs)


def wrap_trained(fns: Functions, run: Any, rs: RunState, streams: tuple[str, ...]) -> RunState:
    """``fns.wrap`` applied to every top-level module the run's optimizers train, each put back where
    the run held it (the optimizers follow a wrapper that replaces the parameters, as FSDP2's does);
    the run's components afterwards."""
    if fns.wrap is None:
        return rs
    optimizers = [c.obj for c in rs.of_kind("optimizer")]
    for c in rs.trained_modules():
        before = {id(p): name for name, p in c.obj.named_parameters(remove_duplicate=False)}
        wrapped = call(fns.wrap, (c.obj,), f"wrapping {c.path}")
        c.replace_in_run(wrapped)
        follow(optimizers, before, dict(unwrap(wrapped).named_parameters(remove_duplicate=False)))
    return fns.observe(run, streams)


def follow(optimizers: list[Any], before: Mapping[int, str], after: Mapping[str, Any]) -> None:
    """Point each optimizer at the parameters a wrapper put in place of the old ones (same names, same
    order), with the state it held for them; state of a sharded parameter's full size is sharded like it."""
    swap = {i: after[name] for i, name in before.items() if name in after and after[name] is not None}
    swap = {i: p for i, p in swap.items() if id(p) != i}
    if not swap:
        return
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["params"] = [swap.get(id(p), p) for p in group["params"]]
        for old in [p for p in optimizer.state if id(p) in swap]:  # state from a start that stepped, or load
            new = swap[id(old)]
            optimizer.state[new] = {k: _like(v, old, new) for k, v in optimizer.state.pop(old).items()}


def _like(value: Any, old: Any, new: Any) -> Any:
    """An optimizer state tensor of ``old``'s full shape, placed as ``new`` (a DTensor shard) is."""
    if not (isinstance(value, torch.Tensor) and value.shape == old.shape and value.dim() > 0):
        return value
    placements = getattr(new, "placements", None)
    if placements is None:
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(new.device), new.device_mesh, placements)


def state_of(run: Any, fn: Callable, verb: str, streams: tuple[str, ...], ignore: tuple[str, ...] = ()) -> RunState:
    rs = run_state(run, streams=streams).without(ignore)
    if not rs.of_kind("module"):
        found = ", ".join(f"{c.path} ({c.kind})" for c in list(rs)[:5]) or "nothing the check knows"
        raise ValueError(
            f"{name_of(fn)} {verb} a run with no torch.nn.Module ({type(run).__name__}; found {found}): "
            f"the run must hold the model being trained, as an item or attribute")
    return rs


def train_step(fns: Functions, run: Any, number: int, label: str = "") -> tuple[float, str | None]:
    """One call of ``step``: its loss as a float, and a digest of its batch when it returned one."""
    loss, batch = step_output(fns, run, number, label)
    return loss, (None if batch is None else digest(batch))


def step_output(fns: Functions, run: Any, number: int, label: str = "") -> tuple[float, Any]:
    """One call of ``step``: its loss as a float, and the batch it returned (``None`` when none)."""
    out = call(fns.step, (run,), f"at step {number}{' of ' + label if label else ''}")
    loss, batch = out, None
    if isinstance(out, tuple) and len(out) == 2:
        loss, batch = out
    return _loss(loss, out, fns.step, number), batch


def train(fns: Functions, run: Any, streams: tuple[str, ...], trace: Trace, first: int, last: int, *,
          prints: str, label: str, snapshot_at: Iterable[int] = (),
          after_step: Callable[[int, Any], None] | None = None) -> None:
    """Steps ``first``..``last`` of ``run``, recorded into ``trace``.

    ``prints`` after each step: ``"draws"`` (which global streams a step draws from: a stream is read
    after every step until one is seen to move it), ``"all"`` (every component fingerprinted: where two
    runs part; only when a failure needs it) or ``"none"``.
    ``snapshot_at``: steps after which to keep a snapshot; ``after_step(n, run)`` runs after the record
    of step n, so a save sees the state the comparison saw.
    """
    snapshot_at = set(snapshot_at)
    for n in range(first, last + 1):
        loss, batch = train_step(fns, run, n, label)
        trace.losses.append(loss)
        trace.batches.append(batch)
        record(run, streams, trace, prints, snapshot=n if n in snapshot_at else None, ignore=fns.ignore)
        if after_step is not None:
            after_step(n, run)
        progress.tick()


def record(run: Any, streams: tuple[str, ...], trace: Trace, prints: str, snapshot: int | None = None,
           rs: RunState | None = None, ignore: tuple[str, ...] = ()) -> None:
    """Fingerprints (at the level ``prints``) and, when ``snapshot`` is a step, a snapshot of ``run``
    (``rs``: its components, when the caller has just found them; else those not in ``ignore``)."""
    if prints == "draws":
        _watch(streams, trace)
    if snapshot is None and prints != "all":
        return
    rs = rs or run_state(run, streams=streams).without(ignore)
    if snapshot is not None:
        trace.snapshots[snapshot] = take_snapshot(rs, streams)
        _describe(trace, rs)
        if prints == "all":
            trace.prints.append({p: fingerprint(v) for p, v in trace.snapshots[snapshot].items()})
    else:
        trace.prints.append(fingerprints(rs, streams))


def _watch(streams: tuple[str, ...], trace: Trace) -> None:
    # a stream seen to move is drawn from: reading numpy's state costs a tenth of a millisecond a step
    for s in streams:
        if s in trace.drawn:
            continue
        now = fingerprint(global_streams.read(s))
        if s in trace.watched and trace.watched[s] != now:
            trace.drawn.add(s)
        trace.watched[s] = now


def uninterrupted(fns: Functions, steps: int, streams: tuple[str, ...], *, doing: str,
                  snapshot_at: Iterable[int] = (), prints: str = "draws",
                  save_to: Mapping[int, Path] | None = None) -> Trace:
    """The run that never stops: start under :data:`SEED`, then every step.

    ``save_to`` (step -> path): ``save`` after those steps, as a training run that checkpoints
    does. The run then goes on, so its first ``at`` steps are the interrupted run's first half:
    the check needs no separate run for it. A snapshot at a step is taken before its save.
    """
    run, rs = start_run(fns, SEED, streams, f"starting the {doing}")
    trace = Trace(started=frozenset(rs.paths))
    _describe(trace, rs)
    record(run, streams, trace, prints, rs=rs)
    train(fns, run, streams, trace, 1, steps, prints=prints, label=f"the {doing}", snapshot_at=snapshot_at,
          after_step=_saver(fns, save_to) if save_to else None)
    return trace


def _saver(fns: Functions, paths: Mapping[int, Path]) -> Callable[[int, Any], None]:
    def save(n: int, run: Any) -> None:
        if n in paths:
            paths[n].parent.mkdir(parents=True, exist_ok=True)
            call(fns.save, (run, paths[n]), f"saving after step {n} to {paths[n]}")
            if not _written(paths[n]):
                raise CheckpointError(paths[n], "not-found",
                                      f"{name_of(fns.save)}(run, path) wrote nothing at path after step {n}")
    return save


def resumed_half(fns: Functions, path: Path, at: int, steps: int, streams: tuple[str, ...], *,
                 prints: str = "none") -> Trace:
    """The resumed run: start under :data:`POISON`, ``load``, then steps ``at+1``..``steps``.

    ``snapshots[at]`` is the state right after load, ``snapshots[steps]`` the final state;
    ``before_load`` the fingerprints right after start; ``prints[0]`` is right after load (every
    component) and, with ``prints="all"``, ``prints[j]`` after step ``at + j``.
    """
    run, rs, before, prefixes = _start_and_load(fns, POISON, path, at, streams)
    trace = Trace(before_load=before, started=frozenset(before) - set(streams), wrappers=prefixes)
    record(run, streams, trace, "all", snapshot=at, rs=rs)
    train(fns, run, streams, trace, at + 1, steps, prints=prints, label=f"the run resumed after step {at}",
          snapshot_at=(steps,))
    return trace


def _start_and_load(fns: Functions, seed: int, path: Path, at: int,
                    streams: tuple[str, ...]) -> tuple[Any, RunState, dict[str, Any], dict[str, str]]:
    """A run started under ``seed`` and loaded from ``path``, its components, their fingerprints
    before load, and the wrapper prefix of each module as load met it."""
    run, rs = start_run(fns, seed, streams, f"starting the run resumed after step {at}", wrap=False)
    before = fingerprints(rs, streams)
    run, bare, rs = load_run(fns, run, path, f"loading the checkpoint saved after step {at} from {path}", streams)
    return run, rs, before, {c.path: wrapper_prefix(c.obj) for c in bare.of_kind("module")}


def load_run(fns: Functions, run: Any, path: Path, doing: str,
             streams: tuple[str, ...]) -> tuple[Any, RunState, RunState]:
    """``load`` into a run whose modules are bare, as training restores before it wraps, then the
    wrap: ``(the run to continue, its components as load left them, its components wrapped)``.
    A load that expected the wrapper raises one ``[prefix]`` cause (:mod:`.wrapped`)."""
    try:
        out = call(fns.load, (run, path), doing)
    except ResumeError as exc:
        found = None
        if fns.wrap is not None:
            trained = run_state(run, streams=()).trained_modules()
            found = wrapper_cause(exc.__cause__, getattr(fns.wrap, "__name__", "wrap="), trained,
                                  name_of(fns.load))
        if found is None:
            raise
        raise ResumeError(f"{found}\n  (while {doing})") from None
    if out is not None and type(out) is not type(run):
        raise TypeError(f"{name_of(fns.load)} returned {_short_repr(out)} (a {type(out).__name__}), not the run "
                        f"(a {type(run).__name__}): load(run, path) returns the run to continue, or None")
    run = run if out is None else out
    bare = state_of(run, fns.load, "returned", streams, fns.ignore)
    return run, bare, wrap_trained(fns, run, bare, streams)


def seeded(fns: Functions, path: Path, at: int, streams: tuple[str, ...], after_load: Mapping[str, Any],
           paths: Iterable[str]) -> frozenset[str]:
    """Those of ``paths`` whose state right after load changes with the seed the resumed run starts from:
    load did not set them, and they were drawn from a random stream (or left as start drew them).

    ``after_load``: the fingerprints after load of the run started under :data:`POISON`. Costs one more
    start and load, under another seed; only a failure asks for it.
    """
    run, rs, _, _ = _start_and_load(fns, OTHER_POISON, path, at, streams)
    again = fingerprints(rs, streams)
    return frozenset(p for p in paths if p in again and p in after_load and again[p] != after_load[p])


def _describe(trace: Trace, rs: RunState) -> None:
    for path, kind in rs.kinds().items():
        trace.kinds.setdefault(path, kind)
    trace.classes.update(classes(rs))
    trace.trained = trace.trained | {c.path for c in rs.trained_modules()}
    trace.bookkeeping = trace.bookkeeping | rs.bookkeeping
    trace.left_out = trace.left_out | set(rs.left_out)
    for c in rs.of_kind("module"):
        if c.path not in trace.wrappers:  # two state_dict() calls: once per module, not per snapshot
            trace.wrappers[c.path] = wrapper_prefix(c.obj)


def wrapper_prefix(module: torch.nn.Module) -> str:
    """What a wrapper (torch.compile, DDP) puts before the module's own names: ``"_orig_mod."``, or ``""``."""
    outer, inner = next(iter(module.state_dict()), ""), next(iter(unwrap(module).state_dict()), "")
    return outer[: len(outer) - len(inner)] if inner and outer.endswith(inner) else ""


def _loss(loss: Any, out: Any, fn: Callable, number: int) -> float:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise TypeError(f"{name_of(fn)} returned a tensor of shape {tuple(loss.shape)} at step {number}: "
                            f"step(run) must return the loss (a tensor with one element, or a float), "
                            f"or (loss, batch)")
        return float(loss.detach().item())
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        return float(loss)
    if hasattr(loss, "item") and callable(loss.item) and getattr(loss, "size", 2) == 1:  # a numpy scalar
        return float(loss.item())
    raise TypeError(f"{name_of(fn)} returned {_short_repr(out)} (a {type(out).__name__}) at step {number}: "
                    f"step(run) must return the loss (a tensor with one element, or a float), or (loss, batch)")


def _short_repr(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _written(path: Path) -> bool:
    if path.is_file():
        return path.stat().st_size > 0
    if path.is_dir():
        return any(True for _ in os.scandir(path))
    return False
