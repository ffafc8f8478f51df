"""Hugging Face sharded directories: an index (``weight_map``: name -> shard file) and the shards it names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import CheckpointError
from . import detect as detect_mod, safetensors as st, torchfile


def read_index(index: Path) -> dict[str, list[str]]:
    """Shard file name -> tensor names, in index order. A damaged index is ``corrupted``."""
    try:
        data = json.loads(index.read_bytes())
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except OSError as e:
        raise CheckpointError(index, "unreadable", e.strerror or str(e)) from None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(index, "corrupted", f"the index has no readable weight_map ({type(e).__name__}: {e})") from None
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(str(shard), []).append(name)
    return shards


def read(index: Path, *, meta: bool, weights_only: bool = True) -> tuple[dict[str, Any], list[Path], bool]:
    """``(tree, shard files, ties_expressible)``: one flat dict merged from the shards."""
    shards = read_index(index)
    tree: dict[str, Any] = {}
    files = []
    torch_shards = False
    for i, (shard, names) in enumerate(shards.items()):
        path = _shard_path(index, shard)
        files.append(path)
        fmt = _guard(path, detect_mod.detect_file, path)
        if fmt == "safetensors":
            tensors, _ = _guard(path, st.read, path, meta=meta)
        elif fmt in ("torch", "torch-legacy"):
            torch_shards = True
            tensors = _read_torch_shard(path, fmt, i, meta=meta, weights_only=weights_only)
        else:
            raise CheckpointError(path, "not-a-checkpoint", f"shard named by {index.name} is not a safetensors or torch file")
        _check_names(index, path, names, tensors)
        tree.update(tensors)
    return tree, files, torch_shards


def verify(index: Path) -> None:
    """Index readable; every named shard present, valid and holding the names the index gives it."""
    shards = read_index(index)
    for shard, names in shards.items():
        path = _shard_path(index, shard)
        fmt = _guard(path, detect_mod.detect_file, path)
        if fmt == "safetensors":
            header = _guard(path, st.verify, path)
            tensors, _ = st.read(path, meta=True, header=header)
        elif fmt in ("torch", "torch-legacy"):
            if fmt == "torch":
                _guard(path, torchfile.verify_zip, path)
            tensors = _read_torch_shard(path, fmt, 0, meta=True, weights_only=True)
        else:
            raise CheckpointError(path, "not-a-checkpoint", f"shard named by {index.name} is not a safetensors or torch file")
        _check_names(index, path, names, tensors)


def _shard_path(index: Path, shard: str) -> Path:
    path = index.parent / shard
    if not path.is_file():
        raise CheckpointError(path, "incomplete", f"shard {shard} named by {index.name} is absent (an interrupted save or copy?)")
    return path


def _read_torch_shard(path: Path, fmt: str, i: int, *, meta: bool, weights_only: bool) -> dict:
    if fmt == "torch":
        tree, _ = _guard(path, torchfile.read_zip, path, meta=meta, weights_only=weights_only)
    else:
        tree = _guard(path, torchfile.read_legacy, path, meta=meta, weights_only=weights_only)
    if not isinstance(tree, dict):
        raise CheckpointError(path, "not-a-checkpoint", f"the shard holds a {type(tree).__name__}, not a name -> tensor dict")
    if meta:
        # File offsets repeat across shards: qualify them by shard, or ties would appear between files.
        for t in tree.values():
            if isinstance(t, torch.Tensor):
                s = t.untyped_storage()
                off = getattr(s, "_checkpoint_offset", None)
                if off is not None and not (isinstance(off, tuple) and off[:1] == ("shard",)):
                    s._checkpoint_offset = ("shard", i, off)
    return tree


def _check_names(index: Path, path: Path, names: list[str], tensors: dict) -> None:
    if tensors.keys() >= set(names):  # the common case, in C
        return
    missing = [n for n in names if n not in tensors]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(
            path, "incomplete",
            f"{len(missing)} tensors that {index.name} places in this shard are absent: {', '.join(missing[:3])}{more}",
        )


def _guard(path: Path, fn: Callable, *args, **kw):
    # A short shard is an incomplete checkpoint, whichever reader noticed.
    try:
        return fn(*args, **kw)
    except CheckpointError as e:
        if e.kind == "truncated":
            raise CheckpointError(e.path or path, "incomplete", f"shard is short: {e.cause}") from None
        raise
