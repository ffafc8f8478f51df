"""Read and write each file kind: torch (zip and legacy), safetensors, sharded directories, DCP.

>>> from pytest_ckpt import formats
>>> c = formats.read("model.safetensors", meta=True)          # doctest: +SKIP
>>> c.format, sorted(c.tree)[:2]                              # doctest: +SKIP
('safetensors', ['lm_head.weight', 'model.embed.weight'])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..atomic import atomic_path
from ..errors import CheckpointError
from .stored import config_hash

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Contents", "read", "verify", "write", "tensor_storage_key", "tie_groups", "config_hash", "FORMATS",
           "CheckpointError"]

FORMATS = ("torch", "torch-legacy", "safetensors", "hf-sharded", "dcp")


@dataclass
class Contents:
    """What a checkpoint path holds.

    ``tree``: the loaded object (nested dict/list/tuple, tensor leaves);
    ``meta``: leaves are meta tensors (no data read); ``stored``: metadata
    written by ``pc.save``; ``ties_expressible``: the format can record storage
    sharing; ``files``: the files that make it up.
    """

    path: Path
    format: str
    tree: Any
    meta: bool
    stored: dict | None
    ties_expressible: bool
    files: list[Path] = field(default_factory=list)


def read(path: str | os.PathLike, *, meta: bool, weights_only: bool = True) -> Contents:
    """Read any checkpoint path. ``meta=True``: shapes and dtypes only, no tensor data read.

    Raises ``CheckpointError`` (never a bare torch/zip/pickle error) naming the file at fault.

    >>> read("ckpt/model.safetensors.index.json", meta=True)   # doctest: +SKIP
    """
    from . import dcp, detect, sharded, torchfile
    from . import safetensors as st

    path = Path(path)
    fmt, target = detect.detect(path)
    stored = None
    files = [target]
    torch_like = False
    if fmt == "torch":
        tree, stored = torchfile.read_zip(target, meta=meta, weights_only=weights_only)
        torch_like = True
    elif fmt == "torch-legacy":
        tree = torchfile.read_legacy(target, meta=meta, weights_only=weights_only)
        torch_like = True
    elif fmt == "safetensors":
        tree, stored = st.read(target, meta=meta)
    elif fmt == "hf-sharded":
        tree, shard_files, torch_like = sharded.read(target, meta=meta, weights_only=weights_only)
        files = [target, *shard_files]
    elif fmt == "dcp":
        tree, files = dcp.read(target, meta=meta, weights_only=weights_only)
        files = [target / dcp.METADATA, *files]
    else:  # a bare pickle: unsafe or not a checkpoint, both raise
        torchfile.scan_bare_pickle(target)
    ties = torch_like or bool(stored and "ties" in stored)
    return Contents(path=path, format=fmt, tree=tree, meta=meta, stored=stored, ties_expressible=ties, files=files)


def verify(path: str | os.PathLike) -> None:
    """Integrity only: checksums, truncation, shards present, stored schema and config hash.

    Raises ``CheckpointError`` (kinds ``truncated``, ``corrupted``, ``incomplete``,
    ``unsafe``, ...) naming the file at fault; returns None when the file is sound.
    """
    from . import dcp, detect, sharded, torchfile
    from . import safetensors as st

    fmt, target = detect.detect(path)
    if fmt == "torch":
        torchfile.verify_zip(target)
    elif fmt == "torch-legacy":
        torchfile.verify_legacy(target)
    elif fmt == "safetensors":
        st.verify(target)
    elif fmt == "hf-sharded":
        sharded.verify(target)
    elif fmt == "dcp":
        dcp.verify(target)
    else:
        torchfile.scan_bare_pickle(target)


def write(tensors: Mapping[str, "torch.Tensor"], path: str | os.PathLike, *, stored: dict) -> Path:
    """Write ``tensors`` atomically: ``.safetensors`` by suffix, else a torch zip; ``stored`` rides along.

    Tied tensors (same storage view) survive: natively in torch files; in
    safetensors each storage is written once and ``stored["ties"]`` lists the
    groups (first name written), which ``read`` turns back into one tensor.

    >>> write({"w": torch.zeros(2)}, "out.safetensors", stored={"format_version": 1})  # doctest: +SKIP
    PosixPath('out.safetensors')
    """
    from . import safetensors as st
    from . import torchfile

    path = Path(path)
    tensors = dict(tensors)
    groups = tie_groups(tensors)
    stored = dict(stored)
    safetensors_out = path.name.endswith(".safetensors")
    if safetensors_out:
        stored["ties"] = groups  # the file's layout depends on them: always the computed groups
    else:
        stored.setdefault("ties", groups)
    with atomic_path(path) as tmp:
        if safetensors_out:
            st.write(tensors, tmp, stored, groups)
        else:
            torchfile.write_zip(tensors, tmp, stored)
    return path


def tie_groups(tensors: Mapping[str, "torch.Tensor"]) -> list[list[str]]:
    """Names whose tensors view the same storage the same way, in insertion order; groups of 2+."""
    groups: dict[tuple, list[str]] = {}
    for name, t in tensors.items():
        key = tensor_storage_key(t)
        if key is not None:
            groups.setdefault(key, []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def tensor_storage_key(t: "torch.Tensor") -> tuple | None:
    """Identity of the storage view a tensor is: equal keys mean tied tensors.

    Real tensors: data pointer, offset, shape, stride, dtype. Meta tensors from
    torch files: the storage's offset in the file instead of the pointer. None
    when not determinable (a meta tensor built from a header) or the storage is
    empty (empty tensors are never meaningfully tied).
    """
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
        return None
    if t.device.type == "meta":
        ident = getattr(storage, "_checkpoint_offset", None)
        if ident is None:
            return None
    else:
        ident = storage.data_ptr()
    if storage.nbytes() == 0:
        return None
    return (ident, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
