"""Where in the checkpoint a piece of state is: it tells "not saved" from "saved, not loaded".

Read only when a component was left as ``start`` built it, and only to word the note and its fix.
Read by the same safe readers as ``pc.verify`` (:func:`pytest_ckpt.formats.objects.read_objects`):
numpy and python RNG states, enums and dataclasses are read; a file that asks for a global that
runs code is searched on stubs, never unpickled.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .. import api
from ..errors import CheckpointError
from ..formats.objects import read_objects
from .compare import leaves, same

#: how deep inside the checkpoint to look
MAX_DEPTH = 6
#: files of a checkpoint directory that are read (a DCP directory's shards are not)
SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


@dataclass
class Saved:
    """What the checkpoint's files hold, by file name; ``partial``: the files read only in part
    (name -> why), where a state found nowhere may still be saved."""

    objects: dict[str, Any]
    partial: dict[str, str] = field(default_factory=dict)


def read_checkpoint(path: str | os.PathLike, *, meta: bool = False) -> Saved | None:
    """The checkpoint's objects by file name (one entry for a file), or ``None`` when none can be
    read. Nothing in them runs (:func:`~pytest_ckpt.formats.objects.read_objects`)."""
    out = Saved({})
    for f in _files(Path(path)):
        try:
            held = read_objects(f, meta=meta)
        except CheckpointError:  # a file the safe readers refuse: the note stays neutral
            continue
        out.objects[f.name] = held.tree
        if held.partial is not None:
            out.partial[f.name] = held.partial
    return out if out.objects else None


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)


def where(checkpoint: Mapping[str, Any], kind: str, path: str, expected: Any) -> str | None:
    """Where the checkpoint holds the state ``expected`` of the component at ``path`` (``'["optimizer"]'``),
    or ``None`` when it holds it nowhere.

    >>> where({"ckpt.pt": {"step": 3, "model": {}}}, "counter", "run.step", 3)
    '["step"]'
    """
    match = _matcher(kind, path, expected)
    several = len(checkpoint) > 1
    for name, obj in checkpoint.items():
        found = _find(obj, match, "", 0)
        if found is not None:
            return f"{name}{found}" if several else (found or "its top level")
    return None


def _matcher(kind: str, path: str, expected: Any) -> Callable[[Any, str], bool]:
    if kind == "optimizer":
        groups = len(expected["groups"])
        return lambda v, key: isinstance(v, Mapping) and "state" in v and len(v.get("param_groups", ())) == groups
    if kind == "scheduler":
        return lambda v, key: isinstance(v, Mapping) and v.get("last_epoch", None) == expected.get("last_epoch")
    if kind == "scaler":
        return lambda v, key: isinstance(v, Mapping) and "_growth_tracker" in v and same(
            v.get("scale"), expected.get("scale"))
    if kind == "counter":
        name = re.findall(r"[A-Za-z_]\w*", path)[-1]  # run.step, run["step"] -> step
        return lambda v, key: key == name and _equal(v, expected)
    return lambda v, key: _equal(v, expected)


def _equal(value: Any, expected: Any) -> bool:
    if type(value) is not type(expected) and not (isinstance(value, torch.Tensor)
                                                   and isinstance(expected, torch.Tensor)):
        if not (isinstance(value, Mapping) and isinstance(expected, Mapping)):
            return False
    try:
        return next(leaves(expected, value), None) is None
    except Exception:  # noqa: BLE001 - values that cannot be compared are not the same state
        return False


def _find(obj: Any, match: Callable[[Any, str], bool], at: str, depth: int, key: str = "") -> str | None:
    if match(obj, key):
        return at
    if depth >= MAX_DEPTH:
        return None
    if isinstance(obj, Mapping):
        items = [(k, v, f'{at}["{k}"]' if isinstance(k, str) else f"{at}[{k}]") for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)) and len(obj) <= 64:
        items = [(str(i), v, f"{at}[{i}]") for i, v in enumerate(obj)]
    else:
        return None
    for k, v, sub in items:
        found = _find(v, match, sub, depth + 1, k)
        if found is not None:
            return found
    return None


def weight_prefix(path: str | os.PathLike, like: Mapping[str, torch.Tensor]) -> tuple[tuple, tuple[str, ...]] | None:
    """Where the checkpoint holds weights like ``like``, and the wrapper prefixes its names carry
    (``(("model",), ("module.",))``), or ``None`` when no file of it can be read that way.

    A load whose names all carry a prefix the model does not have loads nothing under ``strict=False``.
    """
    held = read_checkpoint(path, meta=True)
    for tree in held.objects.values() if held is not None else ():
        try:
            schema = api.schema(tree, like=dict(like))
        except Exception:  # noqa: BLE001 - no weights in this file: the note stays without it
            continue
        return schema.located_at, schema.stripped
    return None
