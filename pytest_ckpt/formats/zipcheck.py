"""A torch zip's layout checked before anything is read from it: one reading of the archive that
``torch.load`` (with or without ``mmap``), Python's ``zipfile`` and pytest-ckpt all share.

Refused (``corrupted``): a record named twice, a local header that disagrees with the central
directory, records that overlap or run past the directory, a compressed storage record, a storage
record whose size is not what its tensors need. Every size is bounded by the file before it is used.
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from . import pickle_stub

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # the 30-byte local file header
_REBUILD = "torch._utils._rebuild_tensor_v2"
_META = "torch._utils._rebuild_meta_tensor_no_storage"


@dataclass
class Layout:
    """What the check found: record name -> (data start, size); each record's stored CRC32;
    names of tensors without data."""

    records: dict[str, tuple[int, int]] = field(default_factory=dict)
    crcs: dict[str, int] = field(default_factory=dict)
    dataless: list[str] = field(default_factory=list)


def check(path: Path, data_pkl: bytes | None = None) -> Layout:
    """Check the archive's layout (and, given ``data.pkl``, its storage records); return it."""
    infos, directory_start = _directory(path)
    layout = Layout()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise CheckpointError(path, "corrupted", f"zip record {twice} appears twice: readers may take different copies")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    try:
        if hasattr(os, "posix_fadvise"):  # headers only: no read-ahead into the tensors' bytes
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for info in infos:
            layout.records[info.filename] = _local(path, fd, info, directory_start)
            layout.crcs[info.filename] = info.CRC
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    finally:
        os.close(fd)
    spans = sorted((start, start + n, name) for name, (start, n) in layout.records.items())
    for (s1, e1, n1), (s2, _, n2) in zip(spans, spans[1:]):
        if s2 < e1:
            raise CheckpointError(path, "corrupted", f"zip records {n1} and {n2} overlap: the directory is damaged")
    if data_pkl is not None:
        layout.dataless = _storages(path, layout, data_pkl, infos)
    return layout


def check_crcs(path: Path, layout: Layout) -> None:
    """Every record's bytes against its stored CRC32 (``corrupted`` naming the first that fails).

    torch.load does not check them: a reader of values that skipped this would read changed
    bytes that ``verify`` refuses."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            try:
                spans = list(layout.records.items())
                # zlib.crc32 lets go of the GIL: the records are checked on every core at once
                with ThreadPoolExecutor(max_workers=min(len(spans), os.cpu_count() or 1) or 1) as pool:
                    crcs = list(pool.map(lambda span: zlib.crc32(view[span[1][0]:span[1][0] + span[1][1]]), spans))
                for (name, _), crc in zip(spans, crcs):
                    if crc != layout.crcs[name]:
                        raise CheckpointError(path, "corrupted", f"zip record {name} fails its CRC check: its bytes changed after saving")
            finally:
                view.release()
    except (OSError, ValueError) as e:
        raise CheckpointError(path, "unreadable", str(e)) from None


def _directory(path: Path) -> tuple[list[zipfile.ZipInfo], int]:
    """The central directory's entries, and where the directory starts (the records end there)."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            start_dir = getattr(zf, "start_dir", None)
    except zipfile.BadZipFile as e:
        raise CheckpointError(path, "corrupted", f"the zip directory cannot be read ({e})") from None
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    except Exception as e:  # zipfile raises many types on damaged directories
        raise CheckpointError(path, "corrupted", f"the zip directory cannot be read ({type(e).__name__}: {e})") from None
    return infos, size if start_dir is None else start_dir


def _local(path: Path, fd: int, info: zipfile.ZipInfo, directory_start: int) -> tuple[int, int]:
    """One record's local header, read alone (``os.pread``: a few hundred bytes, not its data)."""
    off = info.header_offset
    name = info.filename
    if off < 0 or off + _LOCAL.size > directory_start:
        raise CheckpointError(path, "corrupted", f"zip record {name}: its header offset {off} lies outside the records")
    sig, _, _, method, _, _, _, _, _, n, extra = _LOCAL.unpack(os.pread(fd, _LOCAL.size, off))
    if sig != b"PK\x03\x04":
        raise CheckpointError(path, "corrupted", f"zip record {name}: no local header at offset {off}")
    raw = os.pread(fd, n, off + _LOCAL.size)
    if raw.decode("utf-8", "replace") != name and raw.decode("cp437", "replace") != name:
        raise CheckpointError(path, "corrupted", f"zip record {name}: its local header names {raw[:60]!r}")
    start = off + _LOCAL.size + n + extra
    if info.compress_type != zipfile.ZIP_STORED or method != zipfile.ZIP_STORED:
        if "/data/" in name:
            raise CheckpointError(path, "corrupted", f"zip record {name} is compressed: torch stores tensor data uncompressed")
    if info.compress_size != info.file_size and info.compress_type == zipfile.ZIP_STORED:
        raise CheckpointError(path, "corrupted", f"zip record {name}: stored sizes disagree")
    if start + info.compress_size > directory_start:
        raise CheckpointError(
            path, "corrupted",
            f"zip record {name} claims {info.compress_size} bytes from offset {start}, past the end of the records ({directory_start})")
    return start, info.compress_size


def _storages(path: Path, layout: Layout, data_pkl: bytes, infos) -> list[str]:
    """Each storage record is exactly as long as its tensors' storage; names of meta tensors."""
    prefix = next((i.filename[:-len("data.pkl")] for i in infos
                   if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1), "")
    try:
        tree, _ = pickle_stub.run(data_pkl)
    except ValueError as e:
        raise CheckpointError(path, "corrupted", f"data.pkl cannot be decoded ({e.args[0]})") from None
    dataless: list[str] = []
    for where, obj in pickle_stub.walk(tree):
        if isinstance(obj, pickle_stub.Stub) and obj.global_name == _META:
            dataless.append(where)
        elif isinstance(obj, pickle_stub.Stub) and obj.global_name == _REBUILD:
            _check_tensor(path, prefix, layout, where, obj.args)
    return sorted(dataless)


def _check_tensor(path: Path, prefix: str, layout: Layout, name: str, args: tuple) -> None:
    try:
        pid, offset, shape, stride = args[0].pid, args[1], tuple(args[2]), tuple(args[3])
        _, storage_type, key, _, numel = pid
        itemsize = storage_itemsize(storage_type)
        ints = [offset, numel, *shape, *stride]
        if not all(type(v) is int for v in ints) or min(ints) < 0 or len(shape) != len(stride):
            raise ValueError("sizes are not non-negative integers")
    except (AttributeError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(path, "corrupted", f"data.pkl: tensor {name} is described in a damaged way ({e})") from None
    record = f"{prefix}data/{key}"
    if record not in layout.records:
        raise CheckpointError(path, "corrupted", f"tensor {name}: its storage record {record} is absent")
    have = layout.records[record][1]
    if have != numel * itemsize:
        raise CheckpointError(
            path, "corrupted",
            f"tensor {name}: storage record {record} holds {have} bytes, its storage needs {numel * itemsize}")
    if all(shape):
        extent = offset + sum((s - 1) * st for s, st in zip(shape, stride)) + 1
        if extent > numel:
            raise CheckpointError(path, "corrupted", f"tensor {name} reaches element {extent} of a storage of {numel}")


def storage_itemsize(storage_type: Any) -> int:
    """Bytes per element of a pickled storage type (``torch.FloatStorage``: 4); ``ValueError`` otherwise."""
    from torch.storage import _get_dtype_from_pickle_storage_type

    module, _, name = getattr(storage_type, "global_name", "").rpartition(".")
    if module != "torch" or not name.endswith("Storage"):
        raise ValueError(f"storage type {getattr(storage_type, 'global_name', storage_type)!r}")
    if name == "UntypedStorage":
        return 1
    try:
        return _get_dtype_from_pickle_storage_type(name).itemsize
    except KeyError:
        raise ValueError(f"storage type torch.{name}") from None
