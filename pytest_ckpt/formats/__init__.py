"""Read, verify and write every file kind behind one interface (:mod:`.registry`).

Formats are tried in the order they are imported here; a new format is one module
that registers a :class:`~.registry.Format`, and one import line below.

>>> from pytest_ckpt import formats
>>> c = formats.read("model.safetensors", meta=True)          # doctest: +SKIP
>>> c.format, sorted(c.tree)[:2]                              # doctest: +SKIP
('safetensors', ['lm_head.weight', 'model.embed.weight'])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from . import torchfile, safetensors, hf_dir, sharded, dcp, golden, bare_pickle  # noqa: F401  (registration order)
from ..errors import CheckpointError
from .atomic import atomic_path
from .registry import Contents, Format, detect, formats
from .torchfile import without_data

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Contents", "Format", "read", "verify", "write", "detect", "formats", "without_data"]


def read(path: str | os.PathLike, *, meta: bool, weights_only: bool = True, defer_crcs: bool = False) -> Contents:
    """Read any checkpoint path. ``meta=True``: shapes and dtypes only, no tensor data read.

    Raises ``CheckpointError`` (never a bare torch/zip/pickle error) naming the file at fault.
    ``defer_crcs``: a format that can leaves the CRCs of its large records to the caller, who
    compares the values anyway (:attr:`Contents.crcs`, whose ``finish()`` the caller must run).

    >>> read("ckpt/model.safetensors.index.json", meta=True)   # doctest: +SKIP
    """
    fmt, target = detect(path)
    extra = {"defer_crcs": True} if defer_crcs and fmt.defers_crcs and not meta else {}
    try:
        contents = fmt.read(target, meta=meta, weights_only=weights_only, **extra)
    except RecursionError:
        raise _too_deep(target) from None
    contents.path = Path(path)
    return contents


def _too_deep(path: Path) -> CheckpointError:
    return CheckpointError(path, "corrupted", "it nests containers too deeply to be a state dict (Python's recursion limit)")


def verify(path: str | os.PathLike) -> None:
    """Integrity only: checksums, truncation, shards present, stored schema and config hash.

    Raises ``CheckpointError`` (kinds ``truncated``, ``corrupted``, ``incomplete``,
    ``unsafe``, ...) naming the file at fault; returns None when the file is sound.
    """
    fmt, target = detect(path)
    try:
        fmt.verify(target)
    except RecursionError:
        raise _too_deep(target) from None


def write(tensors: Mapping[str, "torch.Tensor"], path: str | os.PathLike, *, stored: dict,
          ties: Iterable[Iterable[str]] = ()) -> Path:
    """Write ``tensors`` atomically: ``.safetensors`` by suffix, else a torch zip; ``stored`` rides along.

    ``ties`` are the groups of names that are one tensor (first name written): torch
    files keep the sharing natively; safetensors files store each group once and
    list it in ``stored["ties"]``, which :func:`read` turns back into one tensor.

    >>> write({"w": torch.zeros(2)}, "out.safetensors", stored={"format_version": 1})  # doctest: +SKIP
    PosixPath('out.safetensors')
    """
    from .registry import writer_for

    path = Path(path)
    groups = [list(g) for g in ties if len(list(g)) > 1]
    stored = {**stored, "ties": groups}
    fmt = writer_for(path)
    with atomic_path(path) as tmp:
        fmt.write(dict(tensors), tmp, stored, groups)
    return path
