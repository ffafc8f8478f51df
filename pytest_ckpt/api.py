"""The library: ``import pytest_ckpt as pc``. Usable without pytest."""

from __future__ import annotations

import functools
import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import torch

from .checkpoint.casts import declared_cast
from .checkpoint.configs import config_to_dict
from .checkpoint import latest
from .checkpoint.latest import LatestComplete
from .checkpoint.patterns import restrict
from .checkpoint.resolve import align, model_locations, module_view, resolve
from .checkpoint.schema import Schema
from .checkpoint.view import dataless
from .compare.compare import compare
from .errors import CheckpointError, CheckpointMismatch
from .formats import without_data
from .report.diff import CheckpointDiff
from .report.inspection import Inspection

STORED_FORMAT_VERSION = 1

F = TypeVar("F", bound=Callable)


def gc_paused(func: F) -> F:
    """Run ``func`` with CPython's cyclic garbage collector paused.

    A comparison of two 200,000-tensor state dicts keeps 400,000 tracked objects
    alive, and the small per-name allocations trigger full collections that walk
    every one of them again: 15% of such a ``pc.diff`` when first measured, about
    5% once the per-name allocations were cut. The work creates no reference
    cycles, so nothing is lost: reference counting frees all of it, and the
    collector resumes (only if it was running) when the call returns or raises.

    >>> @gc_paused
    ... def enabled():
    ...     return gc.isenabled()
    >>> enabled(), gc.isenabled()
    (False, True)
    """
    @functools.wraps(func)
    def paused(*args, **kwargs):
        if not gc.isenabled():
            return func(*args, **kwargs)  # already paused, by a caller or by the user
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.enable()

    return paused  # type: ignore[return-value]


@gc_paused
def schema(source: Any, *, like: Any = None, weights_only: bool = True) -> Schema:
    """Canonical names -> ``TensorSpec`` of ``source``, read from metadata only.

    >>> s = pc.schema("runs/last.ckpt")                  # doctest: +SKIP
    >>> s.located_at, s.stripped                         # doctest: +SKIP
    (('trainer', 'var_wo_ddp'), ('module.',))
    """
    return resolve(source, values=False, like=_like(like), weights_only=weights_only).schema


@gc_paused
def load_state_dict(source: Any, *, like: Any = None, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """The located, canonical state dict of ``source`` (CPU tensors, memory-mapped where possible).

    ``like``: a source whose schema says which of several mappings (model,
    EMA, optimizer) is wanted. ``weights_only`` set to ``False`` is the explicit
    opt-in to unpickling arbitrary objects: only for files you trust.

    >>> sd = pc.load_state_dict("ckpt.pt", like=model)   # doctest: +SKIP
    """
    view = resolve(source, values=True, like=_like(like), weights_only=weights_only)
    missing = dataless(view.tensors)
    if missing:  # no values to hand back: verify's verdict, not a raw NotImplementedError
        where = source if isinstance(source, (str, os.PathLike)) else None
        raise CheckpointError(where, "incomplete", without_data(missing))
    return {name: _cpu(t) for name, t in view.tensors.items()}


@gc_paused
def diff(
    expected: Any,
    actual: Any,
    *,
    values: bool = True,
    atol: float = 0.0,
    rtol: float = 0.0,
    configs: tuple[Any, Any] | None = None,
    weights_only: bool = True,
    like: Any = None,
    only: str | Iterable[str] | None = None,
) -> CheckpointDiff:
    """Compare two sources: *expected* is what the code builds, *actual* what is on disk.

    The actual side is located like the expected one. ``like``: when *expected* is a
    file holding several models (a training state), the source whose schema says
    which one (a model, a checkpoint, a schema snapshot). ``only``: glob patterns of the
    names to compare (as ``expect_missing=`` of :func:`load_into`): a LoRA adapter's
    ``["*lora_*"]``, not the frozen base it sits on.

    >>> d = pc.diff(model, "ckpt.pt")                    # doctest: +SKIP
    >>> d.ok, d.unexpected[:2]                           # doctest: +SKIP
    (False, ['layers.8.attn.weight', 'layers.8.mlp.weight'])
    """
    # a file's CRCs are checked in compare's pass over its values: each byte read once
    exp = resolve(expected, values=values, like=_like(like), weights_only=weights_only,
                  label=_label(expected, "expected"), defer_crcs=True)
    act = resolve(actual, values=values, like=exp, weights_only=weights_only, label=_label(actual, "actual"),
                  defer_crcs=True)
    exp, act = align(exp, act)
    if only is not None:
        exp, act = restrict(exp, act, only)
    cfgs = None
    if configs is not None:
        cfgs = tuple(None if c is None else config_to_dict(c) for c in configs)
    return CheckpointDiff.of(compare(exp, act, values=values, atol=atol, rtol=rtol, configs=cfgs))


def assert_same(expected: Any, actual: Any, **kw) -> CheckpointDiff:
    """Raise :class:`CheckpointMismatch` (an ``AssertionError``) with the report unless the sources match.

    >>> pc.assert_same(model, "ckpt.safetensors")        # doctest: +SKIP
    """
    __tracebackhide__ = True
    result = diff(expected, actual, **kw)
    if not result.ok:
        raise CheckpointMismatch(result)
    return result


@dataclass
class LoadReport:
    """What :func:`load_into` did: where the weights were, what was stripped, what differs."""

    located_at: tuple[str | int, ...]
    stripped: tuple[str, ...]
    diff: CheckpointDiff
    loaded: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.diff.ok


@gc_paused
def load_into(
    model: torch.nn.Module,
    source: Any,
    *,
    strict: bool = True,
    config: Any = None,
    weights_only: bool = True,
    expect_missing: Iterable[str] = (),
    only: str | Iterable[str] | None = None,
    dtype: torch.dtype | None = None,
) -> LoadReport:
    """Load ``source`` into ``model`` (wrapped or not): locate, canonicalize, check, then copy.

    ``strict=True`` raises :class:`CheckpointMismatch` before copying anything
    if anything differs; ``strict=False`` copies what matches and returns the
    difference in ``report.diff``. ``config``: the config ``model`` was built
    from, compared with the config stored by :func:`save`. ``expect_missing``:
    glob patterns of names the model has and the checkpoint is meant to lack (a
    projection trained from scratch, the base weights under LoRA adapters); they keep
    the values the model was built with, and an info note lists them. A pattern also
    covers the names under a module it names. Anything else missing still fails.
    ``only``: glob patterns of the names to check and load (a LoRA adapter file into a
    model whose base weights come from elsewhere); the rest of the model is left as it is.
    ``dtype``: a cast made on purpose, declared: a floating tensor whose dtype differs from
    the model's only by it (the checkpoint's or the model's is ``dtype``: a save that writes
    ``.half()`` weights, loaded into a float32 model) is no difference, and is loaded cast
    to the model's dtype; an info note counts them. Any other dtype difference still fails.

    >>> report = pc.load_into(model, "ckpt.pt", strict=False)   # doctest: +SKIP
    >>> report.diff.missing                                     # doctest: +SKIP
    ['lm_head.bias']
    >>> pc.load_into(clip, "towers.pt", expect_missing=["text_projection"])  # doctest: +SKIP
    >>> pc.load_into(model, "half.pt", dtype=torch.float16)     # doctest: +SKIP
    """
    __tracebackhide__ = True
    if not isinstance(model, torch.nn.Module):
        swapped = isinstance(model, (str, os.PathLike)) and isinstance(source, torch.nn.Module)
        raise TypeError(f"pc.load_into(model, source): model must be an nn.Module to load into, got "
                        f"{_what(model)}" + (_SWAPPED + "pc.load_into(model, path)" if swapped else ""))
    target = module_view(model)
    source_view = resolve(source, values=True, like=target, weights_only=weights_only)
    target, source_view = align(target, source_view)
    if only is not None:
        target, source_view = restrict(target, source_view, only)
    if dtype is not None:
        source_view = declared_cast(target, source_view, dtype)
    # a load copies values: a tensor without any (a meta tensor) is a cause, whatever the source
    source_view.dataless = dataless(source_view.tensors)
    configs, config_strict = None, False
    if config is not None:
        configs = (config_to_dict(config), source_view.config)
        config_strict = source_view.config is not None
    result = CheckpointDiff.of(compare(target, source_view, values=False, configs=configs,
                                       config_strict=config_strict, expect_missing=expect_missing))
    if strict and not result.ok:
        raise CheckpointMismatch(result)
    loadable = {
        name: tensor
        for name, tensor in source_view.tensors.items()
        if name in target.schema and target.schema[name].shape == tuple(tensor.shape)
        and not tensor.is_meta  # saved without data: reported in the diff, nothing to copy
    }
    _copy_into(target, loadable)
    return LoadReport(
        located_at=source_view.schema.located_at,
        stripped=source_view.schema.stripped,
        diff=result,
        loaded=sorted(loadable),
    )


def _copy_into(target, loadable: Mapping[str, torch.Tensor]) -> None:
    module = target.module
    by_source_name = {target.source_names.get(n, n): t for n, t in loadable.items()}
    # strict=False: what is absent was already reported (or accepted by the caller); the
    # load audit knows this call by its caller, this module
    module.load_state_dict(by_source_name, strict=False)


@gc_paused
def save(
    source: Any,
    path: str | os.PathLike,
    *,
    config: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``source``'s canonical state dict atomically; format from the suffix.

    ``.safetensors`` writes safetensors, anything else a torch zip file. The
    config (dataclass, dict, or object with ``to_dict()``), its hash and the
    schema are stored beside the weights, so :func:`load_into` and
    :func:`verify` can check both later. Tied weights survive in both formats.

    >>> pc.save(model, "ckpt.safetensors", config=cfg)  # doctest: +SKIP
    PosixPath('ckpt.safetensors')
    """
    from . import formats
    from .formats.stored import config_hash

    if not isinstance(path, (str, os.PathLike)):
        swapped = isinstance(source, (str, os.PathLike)) and isinstance(path, (torch.nn.Module, Mapping))
        raise TypeError(f"pc.save(source, path): path must be a str or os.PathLike, got {_what(path)}"
                        + (_SWAPPED + "pc.save(model, path)" if swapped else ""))
    view = resolve(source, values=True)
    tensors = _cpu_preserving_ties(view.tensors)
    cfg = config_to_dict(config) if config is not None else view.config
    stored = {
        "format_version": STORED_FORMAT_VERSION,
        "schema": view.schema.to_dict(),
        "config": cfg,
        "config_hash": config_hash(cfg) if cfg is not None else None,
        "extra": dict(extra) if extra else None,
    }
    return formats.write(tensors, path, stored=stored, ties=view.ties or ())


def verify(path: str | os.PathLike) -> None:
    """Integrity only: raise :class:`CheckpointError` on a truncated, corrupted, incomplete or unsafe file.

    >>> pc.verify("ckpt.pt")                             # doctest: +SKIP
    """
    from . import formats

    formats.verify(path)


def load_dcp(state: dict, path: str | os.PathLike) -> None:
    """``torch.distributed.checkpoint.load(state, checkpoint_id=path)`` on every rank, through the
    safe readers: the ``.metadata`` pickle is read with the allowlist before torch opens anything
    (a global outside it raises :class:`CheckpointError` kind ``unsafe`` naming it, and nothing
    runs), non-tensor entries load weights-only.

    >>> model_state, optim_state = get_state_dict(model, optimizer)   # doctest: +SKIP
    >>> pytest_ckpt.api.load_dcp({"model": model_state, "optimizer": optim_state}, "ckpt/step-100")  # doctest: +SKIP
    """
    from .formats import dcp

    dcp.load_into(state, path)


def latest_complete(directory: str | os.PathLike, pattern: str | None = None) -> LatestComplete:
    """The newest complete checkpoint in ``directory`` (a file, a sharded, DCP or Hugging Face
    Trainer ``checkpoint-N`` directory), with the newer ones it skipped and why: where a resume
    falls back after a killed save. Complete: :func:`verify` accepts it (numpy RNG states and other
    data classes allowed), it holds a tensor, and a directory holds every file its older complete
    sibling holds. Newest: by the numbers in the names that share one pattern (``step-10`` after
    ``step-9``, ``ckpt-2025-01-05`` after ``ckpt-2024-12-31``), by the step the checkpoints store
    where the names hold several numbers, and a name outside the pattern (``last.pt``) by the step it
    stores, else its modification time (``.order`` says so). ``pattern``: a glob of the names to
    consider (default: every directory and every ``.pt .pth .bin .ckpt .safetensors`` file, hidden
    names left out; a Trainer output directory's ``checkpoint-N`` directories). Symlinks that leave
    the directory are never returned. ``.path`` is ``None`` when none is complete.

    >>> found = pc.latest_complete("checkpoints")       # doctest: +SKIP
    >>> found.path, found.skipped                        # doctest: +SKIP
    (PosixPath('checkpoints/step-100.pt'), [(PosixPath('checkpoints/step-200.pt'), 'truncated: ...')])
    """
    return latest.latest_complete(directory, pattern)


@gc_paused
def inspect(source: Any, *, like: Any = None, weights_only: bool = True) -> Inspection:
    """What ``source`` holds, from metadata: format, where the weights were, wrappers stripped,
    dtypes, numbered blocks, ties, stored config. ``str()`` of the result is ``pytest-ckpt inspect``.

    >>> print(pc.inspect("runs/last.ckpt"))              # doctest: +SKIP
    runs/last.ckpt: torch, 38 tensors, 1.2 MiB
      located at: trainer.var_wo_ddp
    ...
    """
    view = resolve(source, values=False, like=_like(like), weights_only=weights_only)
    label = str(source) if isinstance(source, (str, os.PathLike)) else view.label
    config, config_at = view.config, None
    if config is None and view.found_config is not None:
        config_at, config = view.found_config
    elif view.saved_by is not None and config is not None and view.saved_by.config_key:
        config_at = view.saved_by.config_key
    return Inspection(path=label, format=view.format, schema=view.schema, ties=view.ties,
                      config=config, config_at=config_at, notes=list(view.notes),
                      saved_by=None if view.saved_by is None else str(view.saved_by))


@gc_paused
def save_schema(source: Any, path: str | os.PathLike, *, config: Any = None, like: Any = None) -> bool:
    """Write ``source``'s schema (names, shapes, dtypes; no values) and config to a golden JSON
    file, atomically; ``pc.diff(model, path)`` compares against it later. Returns False when the
    file already held exactly this (nothing written). A file holding several models (a training
    state's model beside a frozen VAE, an EMA) pins each, with the place the file holds it;
    ``like``: only the one shaped like it (as in :func:`load_state_dict`).

    >>> pc.save_schema(model, "arch.json", config=cfg)  # doctest: +SKIP
    True
    """
    from .formats import golden

    view = resolve(source, values=False, like=_like(like))
    cfg = config_to_dict(config) if config is not None else view.config
    places = model_locations(source) if like is None else []
    models = {at: resolve(source, values=False, at=at).schema.to_dict() for at in places} if len(places) > 1 else None
    return golden.write(view.schema.to_dict(), cfg, Path(path), models)


def _what(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if isinstance(value, (str, os.PathLike)) else type(value).__name__


#: the end of an argument error when the two arguments were given the other way round
_SWAPPED = ": the arguments are the other way round, "


def _like(like):
    if like is None:
        return None
    return resolve(like, values=False)


def _label(source, default: str) -> str | None:
    if isinstance(source, (str, os.PathLike, torch.nn.Module)):
        return None  # resolve names it: the path (a snapshot: "snapshot NAME"), or the model's class
    return f"{default} state dict" if isinstance(source, Mapping) else None


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t if t.device.type == "cpu" else t.cpu()


def _cpu_preserving_ties(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # .cpu() on each tensor would break sharing between tied names: copy each storage once.
    out, done = {}, {}
    for name, t in tensors.items():
        if t.device.type == "cpu":
            out[name] = t
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key not in done:
            done[key] = t.cpu()
        out[name] = done[key]
    return out
