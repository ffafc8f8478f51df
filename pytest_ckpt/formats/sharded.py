"""Hugging Face sharded directories: an index (``weight_map``: name -> shard file) and the shards it names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Hashable

import torch

from ..errors import CheckpointError
from .paths import inside, kind_of, regular
from .registry import Contents, Format, detect_file, register

INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")


def read_index(index: Path) -> dict[str, list[str]]:
    """Shard file name -> tensor names, in index order. A damaged index is ``corrupted``."""
    regular(index, role="the index")
    try:
        data = json.loads(index.read_bytes())
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except OSError as e:
        raise CheckpointError(index, "unreadable", e.strerror or str(e)) from None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError) as e:
        raise CheckpointError(index, "corrupted", f"the index has no readable weight_map ({type(e).__name__}: {e})") from None
    shards: dict[str, list[str]] = {}
    directory = index.parent
    for name, shard in weight_map.items():
        names = shards.get(shard) if isinstance(shard, str) else None
        if names is None:  # each shard's name checked once: a 70B index names 30 files 723 times
            inside(directory, shard, named_by=index, what=f"the weight_map entry for {name!r} names")
            names = shards[shard] = []
        names.append(name)
    return shards


def read(index: Path, *, meta: bool, weights_only: bool = True) -> Contents:
    """One flat dict merged from the shards; torch shards make ties expressible."""
    shards = read_index(index)
    tree: dict[str, Any] = {}
    files = [index]
    torch_shards = False
    shard_of: dict[int, tuple[int, Callable | None]] = {}  # id(tensor) -> (shard, its tie key)
    for i, (shard, names) in enumerate(shards.items()):
        part = _read_shard(index, shard, meta=meta, weights_only=weights_only)
        files.append(part.path)
        torch_shards |= part.format != "safetensors"
        _check_names(index, part.path, names, part.tree)
        if part.format != "safetensors":  # ties are only looked for among torch shards
            for t in part.tree.values():
                if isinstance(t, torch.Tensor):
                    shard_of[id(t)] = (i, part.tie_key)
        tree.update(part.tree)

    def tie_key(t: torch.Tensor) -> Hashable | None:
        # storage places repeat across shard files: qualify them by shard
        i, key = shard_of.get(id(t), (None, None))
        inner = key(t) if key is not None else None
        return None if inner is None else (i, inner)

    return Contents(index, "hf-sharded", tree, meta, ties_expressible=torch_shards, files=files,
                    tie_key=tie_key if meta else None)


def verify(index: Path) -> None:
    """Index readable; every named shard present, valid and holding the names the index gives it."""
    for shard, names in read_index(index).items():
        path = _shard_path(index, shard)
        fmt = _guard(path, detect_file, path, stat_checked=True)
        _check_format(index, path, fmt.name)
        _guard(path, fmt.verify, path)
        part = _guard(path, fmt.read, path, meta=True, weights_only=True)
        _check_names(index, path, names, part.tree)


def _read_shard(index: Path, shard: str, *, meta: bool, weights_only: bool) -> Contents:
    path = _shard_path(index, shard)
    fmt = _guard(path, detect_file, path, stat_checked=True)
    _check_format(index, path, fmt.name)
    part = _guard(path, fmt.read, path, meta=meta, weights_only=weights_only)
    if not isinstance(part.tree, dict):
        raise CheckpointError(path, "not-a-checkpoint", f"the shard holds a {type(part.tree).__name__}, not a name -> tensor dict")
    return part


def _check_format(index: Path, path: Path, name: str) -> None:
    if name not in ("safetensors", "torch", "torch-legacy"):
        raise CheckpointError(path, "not-a-checkpoint", f"shard named by {index.name} is not a safetensors or torch file")


def _shard_path(index: Path, shard: str) -> Path:
    path = index.parent / shard
    try:  # one stat says absent, not a regular file, or a file
        what = kind_of(path)
    except FileNotFoundError:
        raise CheckpointError(path, "incomplete", f"shard {shard} named by {index.name} is absent (an interrupted save or copy?)") from None
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    if what is not None:
        raise CheckpointError(path, "unreadable", f"shard {shard} named by {index.name} is {what}, not a regular file: not read")
    return path


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


def _find(directory: Path, names: list[str]) -> Path | None:
    for suffix in INDEX_SUFFIXES:  # safetensors first: HF writes both only in a transition
        index = [n for n in names if n.endswith(suffix)]
        if index:
            return directory / index[0]
    return None


FORMAT = register(Format(
    "hf-sharded", read=read, verify=verify, find=_find,
    sniff=lambda path, head: path.name.endswith(INDEX_SUFFIXES),  # the index file itself
))


# -- numbered shards without their index: an interrupted save ---------------------------------

#: ``model-00001-of-00007.safetensors``: the names save_pretrained gives shards
SHARD_NAME = re.compile(r"(?P<stem>.+)-(?P<k>\d+)-of-(?P<n>\d+)\.(?P<ext>safetensors|bin)")


def _numbered_shards(names: list[str]) -> dict[tuple[str, int, str], dict[int, str]]:
    """``{(stem, total, ext): {k: file name}}`` for the names that are numbered shards."""
    found: dict[tuple[str, int, str], dict[int, str]] = {}
    for name in names:
        m = SHARD_NAME.fullmatch(name)
        if m and int(m["n"]) > 1:
            found.setdefault((m["stem"], int(m["n"]), m["ext"]), {})[int(m["k"])] = name
    return found


def _find_unindexed(directory: Path, names: list[str]) -> Path | None:
    # claimed only where no index and no DCP metadata is: those formats read the directory
    if any(n.endswith(INDEX_SUFFIXES) for n in names) or ".metadata" in names:
        return None
    return directory if _numbered_shards(names) else None


def unindexed(directory: Path, **_) -> Contents:
    """Refuse (``incomplete``) shards without their index, naming the shards that are absent.

    ``save_pretrained`` writes every shard, then the index: shards without it are a save
    that did not finish, and ``-0000k-of-0000n`` in their names says which are absent.
    """
    groups = _numbered_shards(sorted(p.name for p in directory.iterdir()))
    (stem, total, ext), have = max(groups.items(), key=lambda kv: len(kv[1]))
    absent = [k for k in range(1, total + 1) if k not in have]
    index = f"{stem}.{ext}.index.json"
    width = len(SHARD_NAME.fullmatch(next(iter(have.values())))["k"])
    name = f"{stem}-{{:0{width}d}}-of-{total:0{width}d}.{ext}".format
    if absent:
        shown = ", ".join(name(k) for k in absent[:3])
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        present = ", ".join(have[k] for k in sorted(have)[:2]) + (" ..." if len(have) > 2 else "")
        raise CheckpointError(
            directory, "incomplete",
            f"{plural(len(have), 'shard')} of {total} present ({present}); absent: "
            f"{_shard_word(absent)} ({shown}{more}) and the index {index}: an interrupted save "
            "(save_pretrained writes the index last); re-run the save",
        )
    raise CheckpointError(
        directory / index, "incomplete",
        f"all {total} shards are present but the index {index} is absent: an interrupted save "
        "(save_pretrained writes it after the shards); re-run the save",
    )


def _shard_word(absent: list[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``shards 2-4, 7``; ``[3]`` -> ``shard 3``."""
    spans, start = [], absent[0]
    for prev, k in zip(absent, absent[1:] + [None]):
        if k is None or k != prev + 1:
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = k
    return ("shard " if len(absent) == 1 else "shards ") + ", ".join(spans)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


UNINDEXED = register(Format(
    "hf-sharded-unindexed", read=unindexed, verify=lambda path: unindexed(path), find=_find_unindexed,
))
