"""What one checkpoint holds, for ``pytest-ckpt inspect``: format, size, where the weights were,
wrappers stripped, dtypes, numbered blocks, ties, stored config, notes."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint.notes import Note
from ..checkpoint.schema import Schema
from ..compare.ranges import block_counts
from ..formats.dtypes import dtype_name
from ..formats.jsonable import jsonable

__all__ = ["Inspection"]


@dataclass
class Inspection:
    """A checkpoint described: ``str()`` for a person, ``to_dict()`` for tools."""

    path: str
    format: str
    schema: Schema
    ties: list[tuple[str, ...]] | None = None
    config: dict | None = None
    #: where in the file ``config`` was found (nanoGPT's ``model_args``); None: stored by pc.save
    config_at: str | None = None
    notes: list[Note] = field(default_factory=list)
    #: the framework that wrote the file ("Lightning 2.6.6 (Trainer.save_checkpoint, ...)")
    saved_by: str | None = None

    @property
    def dtypes(self) -> Counter:
        return Counter(dtype_name(s.dtype) for s in self.schema.values())

    @property
    def blocks(self) -> dict[str, int]:
        """Numbered blocks per container (``"" `` for top-level ones, as in an ``nn.Sequential``)."""
        return {k: len(v) for k, v in block_counts(list(self.schema)).items()}

    def to_dict(self, *, tensors: bool = True) -> dict[str, Any]:
        out = {
            "label": self.path,
            "format": self.format,
            "tensors": len(self.schema),
            "located_at": list(self.schema.located_at),
            "stripped": list(self.schema.stripped),
            "config": jsonable(self.config),
            "config_at": self.config_at,
            "bytes": self.schema.nbytes,
            "dtypes": dict(self.dtypes),
            "blocks": self.blocks,
            "ties": [list(g) for g in self.ties] if self.ties is not None else None,
            "notes": [n.to_dict() for n in self.notes],
            "saved_by": self.saved_by,
        }
        if tensors:
            out["schema"] = self.schema.to_dict()
        return out

    def __str__(self) -> str:
        return self.render()

    def render(self, *, every_tensor: bool = False) -> str:
        s = self.schema
        lines = [f"{self.path}: {self.format}, {len(s)} tensors, {_human_bytes(s.nbytes)}",
                 *([f"  saved by:   {self.saved_by}"] if self.saved_by else []),
                 f"  located at: {'.'.join(map(str, s.located_at)) or '<top level>'}",
                 f"  stripped:   {' '.join(s.stripped) or '-'}",
                 f"  dtypes:     {', '.join(f'{k} x{v}' for k, v in self.dtypes.most_common())}"]
        if self.blocks:
            lines.append(f"  blocks:     {_blocks_text(self.blocks)}")
        if self.ties:
            lines.append(f"  tied:       {'; '.join(' = '.join(g) for g in self.ties)}")
        if self.config:
            where = f"(at {self.config_at}) " if self.config_at else ""
            lines.append(f"  config:     {where}{json.dumps(self.config, sort_keys=True, default=str)[:300]}")
        lines += [f"  [{n.kind}] {n.text}" for n in self.notes]
        if every_tensor:
            lines += [f"    {name}  {list(spec.shape)}  {dtype_name(spec.dtype)}" for name, spec in s.items()]
        return "\n".join(lines)


def _blocks_text(blocks: dict[str, int]) -> str:
    """``layers: 4``; numbered blocks without a container (an ``nn.Sequential``): ``2 at top level``."""
    return ", ".join(f"{name}: {n}" if name else f"{n} at top level" for name, n in blocks.items())


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
