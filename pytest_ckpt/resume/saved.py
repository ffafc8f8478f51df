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


@dataclass(frozen=True)
class Location:
    """Where a checkpoint holds a value: the keys inside the object (``["optimizer"]``, ``""`` for the
    object itself) and, for a checkpoint of several files, the file that holds it.

    >>> str(Location('["step"]', "pretrain_resume.pth")), Location('["step"]').ref
    ('["step"] in pretrain_resume.pth', 'checkpoint["step"]')
    """

    key: str
    file: str = ""

    def __str__(self) -> str:
        key = self.key or "its top level"
        return f"{key} in {self.file}" if self.file else key

    @property
    def ref(self) -> str:
        """The value as code, for a fix: ``checkpoint["step"]`` (``checkpoint``: what the file holds)."""
        return f"checkpoint{self.key}"


def where(checkpoint: Mapping[str, Any], kind: str, path: str, expected: Any) -> Location | None:
    """Where the checkpoint holds the state ``expected`` of the component at ``path`` (``'["optimizer"]'``),
    or ``None`` when it holds it nowhere.

    >>> str(where({"ckpt.pt": {"step": 3, "model": {}}}, "counter", "run.step", 3))
    '["step"]'
    """
    return _first(checkpoint, _matcher(kind, path, expected))


def where_like(checkpoint: Mapping[str, Any], expected: Any) -> Location | None:
    """Where the checkpoint holds a value of the same make as ``expected`` (a random state of the same
    size, a tensor of the same shape and dtype), whatever its value: saved at another time.

    >>> import torch
    >>> str(where_like({"c.pt": {"rng": torch.zeros(4, dtype=torch.uint8)}}, torch.ones(4, dtype=torch.uint8)))
    '["rng"]'
    """
    def like(v: Any, key: str) -> bool:
        if isinstance(expected, torch.Tensor):
            return isinstance(v, torch.Tensor) and v.shape == expected.shape and v.dtype == expected.dtype
        if isinstance(expected, tuple) and expected and isinstance(expected[0], str):  # numpy's legacy state
            return isinstance(v, tuple) and len(v) == len(expected) and v[:1] == expected[:1]
        if isinstance(expected, tuple):  # python's random state
            return isinstance(v, tuple) and len(v) == len(expected) and type(v[-1]) is type(expected[-1])
        return False

    return _first(checkpoint, like)


#: keys under which a project keeps how far it got: an int here may be the data position
POSITION_KEYS = re.compile(r"step|iter|batch|index|idx|pos|done|consumed|seen", re.IGNORECASE)


def position(checkpoint: Mapping[str, Any], count: int) -> Location | None:
    """Where the checkpoint holds the number ``count`` under a key that counts progress (``step``,
    ``iter_num``, ``batches_done``): the data position, when a loader is rebuilt from it.

    >>> str(position({"c.pt": {"epoch": 3, "step": 3}}, 3))
    '["step"]'
    """
    return _first(checkpoint, lambda v, key: type(v) is int and v == count and bool(POSITION_KEYS.search(str(key))))


def weights(checkpoint: Mapping[str, Any], expected: Mapping[str, torch.Tensor]) -> tuple[Location, torch.dtype] | None:
    """Where the checkpoint holds tensors named and shaped as ``expected``, and their (first floating) dtype.

    >>> import torch
    >>> loc, dtype = weights({"c.pt": {"model": {"w": torch.zeros(2, dtype=torch.half)}}}, {"w": torch.ones(2)})
    >>> str(loc), dtype
    ('["model"]', torch.float16)
    """
    def named_alike(v: Any, key: str) -> bool:
        return (isinstance(v, Mapping) and v.keys() == expected.keys()
                and all(isinstance(t, torch.Tensor) and t.shape == expected[k].shape for k, t in v.items()))

    several = len(checkpoint) > 1
    held = [Location(at, name if several else "") for name, obj in checkpoint.items()
            if (at := _find(obj, named_alike, "", 0)) is not None]
    if not held:
        return None
    found = next((loc for loc in held if loc.key), held[0])  # in a training state, rather than a weights file
    value = _at(checkpoint, found)
    dtypes = [t.dtype for t in value.values() if t.is_floating_point()]
    return (found, dtypes[0]) if dtypes else None


def _first(checkpoint: Mapping[str, Any], match: Callable[[Any, str], bool]) -> Location | None:
    several = len(checkpoint) > 1
    for name, obj in checkpoint.items():
        found = _find(obj, match, "", 0)
        if found is not None:
            return Location(found, name if several else "")
    return None


def _at(checkpoint: Mapping[str, Any], loc: Location) -> Any:
    """The value at ``loc`` (found by :func:`_find`, so each step of its key is there)."""
    obj = checkpoint[loc.file] if loc.file else next(iter(checkpoint.values()))
    for key in re.findall(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]', loc.key):
        name, index = key
        obj = obj[name] if name or not index else obj[int(index)]
    return obj


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
