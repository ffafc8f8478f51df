"""Golden schema snapshots: stable, reviewable JSON of names, shapes and dtypes (no values).

A snapshot is a checkpoint format of its own: it holds a schema and a config but no
tensor data, so it is read as meta tensors and compared by name, shape and dtype.
A snapshot of a file holding several models (VAR's training state: the trained model
beside a frozen VAE) pins each under ``"models"``, with the place the file holds it;
it reads back as that tree, so each model is found where the file keeps it.
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


Located = tuple  # a place inside a file: keys (str) and indices (int)


def render(schema: Mapping[str, Mapping[str, Any]], config: dict | None = None,
           models: Mapping[Located, Mapping[str, Mapping[str, Any]]] | None = None) -> str:
    """The snapshot file text: sorted, one tensor per line, so a pull request diff reads as an architecture diff.
    ``models``: every model of a file holding several, by the place the file holds it (``schema`` unused).

    >>> print(render({"w": {"shape": [2], "dtype": "float32"}}, {"n": 1}))
    {
      "format_version": 1,
      "config": {"n": 1},
      "tensors": {
        "w": {"shape": [2], "dtype": "float32"}
      }
    }
    <BLANKLINE>
    >>> print(render({}, None, {("trainer", "vae"): {"w": {"shape": [], "dtype": "float32"}}}))
    {
      "format_version": 1,
      "config": null,
      "models": [
        {"located_at": ["trainer", "vae"], "tensors": {
          "w": {"shape": [], "dtype": "float32"}
        }}
      ]
    }
    <BLANKLINE>
    """
    lines = ["{", f'  "format_version": {FORMAT_VERSION},']
    lines.append(f'  "config": {json.dumps(config, sort_keys=True, default=str)},')
    if not models:
        lines.append('  "tensors": {')
        lines += _tensor_lines(schema, "    ")
        lines.append("  }")
    else:
        lines.append('  "models": [')
        for i, (located_at, tensors) in enumerate(models.items()):
            lines.append(f'    {{"located_at": {json.dumps(list(located_at))}, "tensors": {{')
            lines += _tensor_lines(tensors, "      ")
            lines.append("    }}" + ("," if i < len(models) - 1 else ""))
        lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _tensor_lines(schema: Mapping[str, Mapping[str, Any]], indent: str) -> list[str]:
    items = sorted(schema.items())
    return [f"{indent}{json.dumps(name)}: {{\"shape\": {json.dumps(list(spec['shape']))}, "
            f"\"dtype\": {json.dumps(spec['dtype'])}}}{',' if i < len(items) - 1 else ''}"
            for i, (name, spec) in enumerate(items)]


def write(schema: Mapping[str, Mapping[str, Any]], config: dict | None, path: Path,
          models: Mapping[Located, Mapping[str, Mapping[str, Any]]] | None = None) -> bool:
    """Write the snapshot atomically, unless the file already holds exactly this text.
    Returns True when it wrote."""
    text = render(schema, config, models)
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
    if not isinstance(data, dict) or not (isinstance(data.get("tensors"), dict) or _models_ok(data.get("models"))):
        raise CheckpointError(path, "corrupted", "snapshot has no \"tensors\" mapping, nor a \"models\" list "
                              "of {\"located_at\": [...], \"tensors\": {...}}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, "corrupted",
                              f"snapshot format_version {version!r} is not {FORMAT_VERSION}; "
                              f"{UPDATE_HINT}")
    return data


def _models_ok(models: Any) -> bool:
    return isinstance(models, list) and bool(models) and all(
        isinstance(m, dict) and isinstance(m.get("tensors"), dict) and isinstance(m.get("located_at"), list)
        and all(isinstance(p, (str, int)) for p in m["located_at"]) for m in models)


def read(path: Path, *, meta: bool = True, weights_only: bool = True) -> Contents:
    """A snapshot's tensors as meta tensors (a snapshot has no values), its config as stored; a
    snapshot of several models, as the tree of the file it pinned (each model where the file held it)."""
    data = load(path)
    try:
        if "tensors" in data:
            tree: Any = _meta(data["tensors"])
        else:
            tree = {}
            for model in data["models"]:
                tree = _placed(tree, tuple(model["located_at"]), _meta(model["tensors"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(path, "corrupted", f"a snapshot entry is malformed ({type(e).__name__}: {e})") from None
    return Contents(path, "snapshot", tree, True, stored={"config": data.get("config")},
                    files=[path], noun="snapshot")


def _meta(tensors: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(spec["shape"], dtype=dtype_from_name(spec["dtype"]), device="meta")
            for name, spec in tensors.items()}


def _placed(tree: Any, located_at: Located, tensors: dict) -> Any:
    """``tree`` with ``tensors`` at ``located_at`` (string keys and list indices, as the file had them)."""
    if not located_at:
        if tree:
            raise ValueError("a model at the top level beside others")
        return tensors
    head, rest = located_at[0], located_at[1:]
    if isinstance(head, int):
        tree = tree if isinstance(tree, list) else []
        tree += [{} for _ in range(head + 1 - len(tree))]
        tree[head] = _placed(tree[head], rest, tensors)
        return tree
    if not isinstance(tree, dict):
        raise ValueError(f"{head!r} under a list")
    tree[head] = _placed(tree.get(head, {}), rest, tensors)
    return tree


def verify(path: Path) -> None:
    """A snapshot is sound when it parses and every entry is a valid shape and dtype."""
    read(path)


def _sniff(path: Path, head: bytes) -> bool:
    return path.suffix == ".json" and head.lstrip()[:1] == b"{"


FORMAT = register(Format("snapshot", read=read, verify=verify, sniff=_sniff))
