"""Golden schema snapshots: stable, reviewable JSON of names, shapes and dtypes (no values)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import CheckpointError
from .gcpause import gc_paused

SNAPSHOT_FORMAT_VERSION = 1
SNAPSHOT_DIRNAME = "__ckpt_snapshots__"
UPDATE_HINT = "run pytest --ckpt-update if this change is intended"
#: the fix of every cause found against a snapshot (the rules' own fixes speak of checkpoints)
SNAPSHOT_FIX = f"{UPDATE_HINT}; if not, undo this change to the model"


def render(schema_dict: dict[str, dict], config: dict | None = None) -> str:
    """The snapshot file text: sorted, one tensor per line, so a pull request diff reads as an architecture diff."""
    lines = ["{", f'  "format_version": {SNAPSHOT_FORMAT_VERSION},']
    lines.append(f'  "config": {json.dumps(config, sort_keys=True, default=str)},')
    lines.append('  "tensors": {')
    items = sorted(schema_dict.items())
    for i, (name, spec) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"    {json.dumps(name)}: {{\"shape\": {json.dumps(list(spec['shape']))}, "
                     f"\"dtype\": {json.dumps(spec['dtype'])}}}{comma}")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def read(path: Path) -> dict:
    """A snapshot file's content; ``CheckpointError`` naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(path, "corrupted", f"snapshot is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tensors"), dict):
        raise CheckpointError(path, "corrupted", "snapshot has no \"tensors\" mapping")
    version = data.get("format_version")
    if version != SNAPSHOT_FORMAT_VERSION:
        raise CheckpointError(path, "corrupted",
                              f"snapshot format_version {version!r} is not {SNAPSHOT_FORMAT_VERSION}; "
                              f"{UPDATE_HINT}")
    return data


def snapshot_view(data: dict, label: str):
    """A metadata-only :class:`View` of a snapshot's tensors, to compare against."""
    import torch

    from .checkpoint.schema import dtype_from_name
    from .checkpoint.view import View

    tensors = {
        name: torch.empty(spec["shape"], dtype=dtype_from_name(spec["dtype"]), device="meta")
        for name, spec in data["tensors"].items()
    }
    return View.of_tensors(label, tensors, config=data.get("config"), format="snapshot", noun="snapshot")


@dataclass
class SnapshotResult:
    """The outcome of one ``assert_match``: written, matched, or the diff that failed."""

    path: Path
    outcome: str  # "match" | "written" | "missing" | "differs"
    diff: Any = None
    message: str = ""


@dataclass
class SnapshotSession:
    """What one pytest run did with snapshot files (which were used, which were written)."""

    update: bool = False
    used: set[Path] = field(default_factory=set)
    written: list[Path] = field(default_factory=list)


@gc_paused
def check(source: Any, path: Path, *, update: bool, config: Any = None) -> SnapshotResult:
    """Compare ``source``'s schema with the golden file at ``path``; write it only when ``update``."""
    from .checkpoint.configs import config_to_dict
    from .checkpoint.resolve import resolve
    from .compare.compare import compare

    current = resolve(source, values=False, label="current model")
    cfg = config_to_dict(config) if config is not None else current.config
    text = render(current.schema.to_dict(), cfg)
    if not path.exists():
        if update:
            atomic_write_text(path, text)
            return SnapshotResult(path, "written")
        return SnapshotResult(path, "missing", message=(
            f"no golden schema snapshot at {path}; {UPDATE_HINT} to create it"))
    data = read(path)
    golden = snapshot_view(data, label=f"snapshot {path.name}")
    result = compare(current, golden, values=False, configs=(cfg, data.get("config")))
    result.notes = [n if n.info else dataclasses.replace(n, fix=SNAPSHOT_FIX) for n in result.notes]
    if result.ok:
        if update and path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)  # same schema, config changed: keep the file current
            return SnapshotResult(path, "written")
        return SnapshotResult(path, "match", diff=result)
    if update:
        atomic_write_text(path, text)
        return SnapshotResult(path, "written", diff=result)
    return SnapshotResult(path, "differs", diff=result, message=(
        f"schema differs from golden snapshot {path}\n{result}"))


def stale_snapshots(root: Path, used: set[Path]) -> list[Path]:
    """Snapshot files under ``root`` that no test of this run used."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*.json") if p.resolve() not in used)
