"""The metadata ``pc.save`` writes beside the weights: how it is encoded, hashed and checked."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from ..errors import CheckpointError

RECORD = "pytest_ckpt.json"  # zip record, under the torch archive's folder
META_KEY = "pytest_ckpt"  # safetensors __metadata__ key holding the JSON
CRC_KEY = "pytest_ckpt.data_crc32"  # safetensors __metadata__ key: CRC32 of the data region, hex


def config_hash(cfg: Any) -> str:
    """sha256 (hex) of a config's canonical JSON: sorted keys, no spaces, ``str`` for the rest.

    >>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encode(stored: Mapping[str, Any]) -> str:
    """The JSON text stored in a file."""
    return json.dumps(stored, sort_keys=True, separators=(",", ":"), default=str)


def decode(text: str | bytes, path) -> dict:
    """Parse stored metadata; damaged JSON is ``corrupted``."""
    return json_object(text, path, "stored pytest-ckpt metadata")


def json_object(text: str | bytes, path, what: str) -> dict:
    """``text`` parsed as a JSON object; anything else is ``corrupted``, saying ``what`` it was."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(path, "corrupted", f"{what} is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(path, "corrupted", f"{what} nests too deeply to be a checkpoint's JSON") from None
    except TypeError:  # not text at all (a number where the JSON text belongs)
        raise CheckpointError(path, "corrupted", f"{what} is a {type(text).__name__}, not JSON text") from None
    if not isinstance(value, dict):
        raise CheckpointError(path, "corrupted", f"{what} is not a JSON object")
    return value


def check(path, stored: Mapping[str, Any] | None, tree: Any) -> None:
    """Raise ``corrupted`` when the stored config hash or schema disagrees with the file."""
    if not stored:
        return
    if "config" in stored and stored.get("config_hash"):
        actual = config_hash(stored["config"])
        if actual != stored["config_hash"]:
            raise CheckpointError(
                path, "corrupted",
                f"stored config hash {str(stored['config_hash'])[:12]}... does not match the stored config "
                f"({actual[:12]}...): the metadata was edited or damaged",
            )
    schema = stored.get("schema")
    if isinstance(schema, Mapping):
        problems = schema_problems(schema, tree)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise CheckpointError(
                path, "corrupted",
                "stored schema disagrees with the tensors in the file: " + "; ".join(problems[:5]) + more,
            )


def schema_problems(schema: Mapping[str, Any], tree: Any) -> list[str]:
    """Differences between a stored ``Schema.to_dict()`` and a flat name -> tensor mapping."""
    import torch

    from .dtypes import dtype_name

    tensors = {k: v for k, v in tree.items() if isinstance(v, torch.Tensor)} if isinstance(tree, Mapping) else {}
    problems = [f"{name}: stored but absent" for name in schema if name not in tensors]
    problems += [f"{name}: present but not in the stored schema" for name in tensors if name not in schema]
    for name, spec in schema.items():
        t = tensors.get(name)
        if t is None or not isinstance(spec, Mapping):
            continue
        if not isinstance(spec.get("shape", ()), (list, tuple)):
            problems.append(f"{name}: stored shape {spec.get('shape')!r} is not a list")
        elif list(spec.get("shape", ())) != list(t.shape):
            problems.append(f"{name}: shape {tuple(t.shape)}, stored {tuple(spec.get('shape', ()))}")
        if spec.get("dtype") not in (None, dtype_name(t.dtype)):
            problems.append(f"{name}: dtype {dtype_name(t.dtype)}, stored {spec.get('dtype')}")
    return problems
