"""Golden schema snapshots: stable, reviewable JSON of names, shapes and dtypes (no values).

A snapshot is a checkpoint format of its own: it holds a schema and a config but no
tensor data, so it is read as meta tensors and compared by name, shape and dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError
from .atomic import atomic_write_text
from .dtypes import dtype_from_name
from .registry import Contents, Format, register

FORMAT_VERSION = 1
UPDATE_HINT = "run pytest --ckpt-update if this change is intended"


def render(schema: Mapping[str, Mapping[str, Any]], config: dict | None = None) -> str:
    """The snapshot file text: sorted, one tensor per line, so a pull request diff reads as an architecture diff.

    >>> print(render({"w": {"shape": [2], "dtype": "float32"}}, {"n": 1}))
    {
      "format_version": 1,
      "config": {"n": 1},
      "tensors": {
        "w": {"shape": [2], "dtype": "float32"}
      }
    }
    <BLANKLINE>
    """
    lines = ["{", f'  "format_version": {FORMAT_VERSION},']
    lines.append(f'  "config": {json.dumps(config, sort_keys=True, default=str)},')
    lines.append('  "tensors": {')
    items = sorted(schema.items())
    for i, (name, spec) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"    {json.dumps(name)}: {{\"shape\": {json.dumps(list(spec['shape']))}, "
                     f"\"dtype\": {json.dumps(spec['dtype'])}}}{comma}")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(schema: Mapping[str, Mapping[str, Any]], config: dict | None, path: Path) -> bool:
    """Write the snapshot atomically, unless the file already holds exactly this text.
    Returns True when it wrote."""
    text = render(schema, config)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def load(path: Path) -> dict:
    """A snapshot file's content; ``CheckpointError`` naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(path, "corrupted", f"snapshot is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tensors"), dict):
        raise CheckpointError(path, "corrupted", "snapshot has no \"tensors\" mapping")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, "corrupted",
                              f"snapshot format_version {version!r} is not {FORMAT_VERSION}; "
                              f"{UPDATE_HINT}")
    return data


def read(path: Path, *, meta: bool = True, weights_only: bool = True) -> Contents:
    """A snapshot's tensors as meta tensors (a snapshot has no values), its config as stored."""
    data = load(path)
    try:
        tensors = {
            name: torch.empty(spec["shape"], dtype=dtype_from_name(spec["dtype"]), device="meta")
            for name, spec in data["tensors"].items()
        }
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(path, "corrupted", f"a snapshot entry is malformed ({type(e).__name__}: {e})") from None
    return Contents(path, "snapshot", tensors, True, stored={"config": data.get("config")},
                    files=[path], noun="snapshot")


def verify(path: Path) -> None:
    """A snapshot is sound when it parses and every entry is a valid shape and dtype."""
    read(path)


def _sniff(path: Path, head: bytes) -> bool:
    return path.suffix == ".json" and head.lstrip()[:1] == b"{"


FORMAT = register(Format("snapshot", read=read, verify=verify, sniff=_sniff))
