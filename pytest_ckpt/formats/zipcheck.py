"""A torch zip's layout checked before anything is read from it, each record as ``torch.load``
reads it: the central directory first (:mod:`.zipdir`, miniz's reading), then the local header it
points at.

Refused (``corrupted``), naming the record:

* what torch refuses, or reads differently with and without ``mmap``: a record marked encrypted
  or as a directory (torch.load then reads none of its bytes), compressed tensor data, a method torch
  cannot inflate, a name outside the archive's folder or not UTF-8, two names torch cannot tell
  apart (it ignores letter case), a tensor whose storage record is absent or of another size;
* what Python's ``zipfile`` refuses where torch looks away: a local header without its signature
  or naming another record, records that overlap, a CRC32 that does not match (torch checks none);
* a compressed record that would inflate past ``MAX_RATIO`` times its size, said before anything
  is inflated (a decompression bomb; torch.save compresses nothing).

Fields no reader uses for the data are not checked: times, versions, comments, extra-field
contents, the local header's copies of sizes and CRC, data descriptors.
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from . import pickle_stub, zipdir
from .checksum import crc32

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # the 30-byte local file header
_REBUILD = "torch._utils._rebuild_tensor_v2"
_META = "torch._utils._rebuild_meta_tensor_no_storage"
STORED, DEFLATED = 0, 8
ENCRYPTED, PATCH, STRONG = 0x1, 0x20, 0x40
#: a compressed record may inflate to this many times its size (deflate reaches about 1000:1 on
#: repeated bytes; pickles of real state dicts compress 3-10:1)...
MAX_RATIO = 32
#: ...or to this many bytes, whatever its ratio
MIN_BOUND = 1 << 20


@dataclass(frozen=True)
class Span:
    """Where one record's bytes lie, as torch reads them."""

    record: str  # its full name, for messages
    start: int  # its first data byte (after the local header, as torch computes it)
    stored: int  # bytes in the file
    size: int  # bytes once inflated (``stored`` when it is stored)
    method: int
    crc: int


@dataclass
class Layout:
    """The archive as torch reads it: its folder, each record by its name in the folder,
    and the names of tensors saved without data."""

    folder: str
    spans: dict[str, Span] = field(default_factory=dict)
    dataless: list[str] = field(default_factory=list)
    _folded: dict[bytes, str] = field(default_factory=dict)
    #: the archive's bytes, when :func:`check` was given them rather than a file
    memory: bytes | None = field(default=None, repr=False)

    def find(self, name: str) -> Span | None:
        """The record torch reads for ``name`` (``"data.pkl"``): miniz ignores ASCII letter case."""
        return self.spans.get(self._folded.get(name.encode().lower(), ""))

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None


def check(path: Path, data: bytes | None = None) -> Layout:
    """The archive's directory and local headers, as torch reads them; nothing is inflated.

    ``data``: the archive's bytes when they are in memory (an entry ``torch.save`` wrote inside a
    DCP storage file); ``path`` then only names it in messages."""
    if data is not None:
        layout = _check(path, lambda n, offset: data[offset:offset + n], len(data))
        layout.memory = data
        return layout
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    try:
        if hasattr(os, "posix_fadvise"):  # headers only: no read-ahead into the tensors' bytes
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        return _check(path, functools.partial(os.pread, fd), os.fstat(fd).st_size)
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    finally:
        os.close(fd)


def _check(path: Path, pread: zipdir.Pread, size: int) -> Layout:
    directory = zipdir.read(path, pread, size)
    layout = _names(path, directory.records)
    for record, name in zip(directory.records, list(layout.spans)):
        _flags(path, record, name)
    _locals(path, pread, directory, layout)
    return layout


def _names(path: Path, records: list[zipdir.Record]) -> Layout:
    """torch's reading of the names: the folder is the first record's; every record lies in it
    and decodes as UTF-8 (``torch.load`` lists them all); a name is found ignoring letter case."""
    if not records:
        raise CheckpointError(path, "corrupted", "the zip archive holds no records")
    first = records[0].name
    if b"/" not in first:
        raise CheckpointError(path, "corrupted", f"zip record {records[0].shown} is not inside a folder: "
                                                 "torch reads every record under the first record's folder")
    folder = first[:first.index(b"/") + 1]
    layout = Layout(folder.decode("utf-8", "replace"))
    for record in records:
        if not record.name.startswith(folder) or b"\0" in record.name:
            raise CheckpointError(path, "corrupted", f"zip record {record.shown} lies outside the archive's folder "
                                                     f"{layout.folder}: torch.load refuses the archive")
        try:
            name = record.name[len(folder):].decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(path, "corrupted", f"zip record name {record.name!r} is not UTF-8: "
                                                     "torch.load cannot list the archive") from None
        folded = record.name[len(folder):].lower()
        if folded in layout._folded:
            other = layout._folded[folded]
            if other == name:
                raise CheckpointError(path, "corrupted",
                                      f"zip record {record.shown} appears twice: readers may take different copies")
            raise CheckpointError(path, "corrupted", f"zip records {layout.folder}{other} and {record.shown} differ "
                                                     "only in letter case: torch may read either")
        layout._folded[folded] = name
        layout.spans[name] = Span(record.shown, -1, record.compressed, record.size, record.method, record.crc)
    return layout


def _flags(path: Path, record: zipdir.Record, name: str) -> None:
    """What torch refuses, or reads differently, whatever the bytes (``name``: in the folder)."""
    who = f"zip record {record.shown}"
    if record.flags & (ENCRYPTED | STRONG):
        raise CheckpointError(path, "corrupted", f"{who} is marked encrypted (flag bits 0 and 6): torch.load refuses it")
    if record.flags & PATCH:
        raise CheckpointError(path, "corrupted", f"{who} is marked as patch data (flag bit 5): torch.load refuses it")
    if record.is_directory and record.size:  # an empty one reads as empty either way
        raise CheckpointError(path, "corrupted", f"{who} is marked as a directory (MS-DOS attribute 0x10): "
                                                 "torch.load reads none of its bytes (the tensor holds whatever memory held)")
    if record.method not in (STORED, DEFLATED):
        raise CheckpointError(path, "corrupted", f"{who} is compressed with method {record.method}, "
                                                 "which torch cannot read")
    if record.method == STORED:
        if record.compressed != record.size:
            raise CheckpointError(path, "corrupted", f"{who} is stored, but its directory entry gives "
                                                     f"{record.compressed} and {record.size} bytes")
        return
    if name.startswith("data/") and record.size:
        raise CheckpointError(path, "corrupted", f"{who} is compressed: torch stores tensor data uncompressed, "
                                                 "and torch.load reads it differently with and without mmap")
    bound = max(MIN_BOUND, MAX_RATIO * record.compressed)
    if record.size > bound:
        ratio = record.size / max(record.compressed, 1)
        raise CheckpointError(
            path, "corrupted",
            f"{who} is compressed: {record.compressed} bytes claim to inflate to {record.size} ({ratio:.0f}:1); "
            f"torch.save compresses nothing, and pytest-ckpt inflates at most {MAX_RATIO}:1 (a decompression bomb?)")


def _locals(path: Path, pread: zipdir.Pread, directory: zipdir.Directory, layout: Layout) -> None:
    """Each local header: its signature and name (Python's zipfile checks both), and where its
    data starts (torch adds its name and extra-field lengths); no record overlaps another."""
    spans = []
    for record, name in zip(directory.records, list(layout.spans)):
        who = f"zip record {record.shown}"
        off = record.header
        if off + _LOCAL.size > directory.start:
            raise CheckpointError(path, "corrupted", f"{who}: its header offset {off} lies outside the records")
        head = pread(_LOCAL.size + len(record.name), off)
        sig, *_, n, extra = _LOCAL.unpack_from(head)
        if sig != b"PK\x03\x04":
            raise CheckpointError(path, "corrupted", f"{who}: no local header at offset {off}")
        if n != len(record.name) or head[_LOCAL.size:] != record.name:
            local = pread(min(n, 60), off + _LOCAL.size)
            raise CheckpointError(path, "corrupted", f"{who}: its local header names {local!r}")
        start = off + _LOCAL.size + n + extra
        if not record.compressed:  # torch reads nothing of an empty record: its extra field is moot
            start = off + _LOCAL.size + n
        elif start + record.compressed > directory.start:
            raise CheckpointError(
                path, "corrupted",
                f"{who} claims {record.compressed} bytes from offset {start}, past the end of the records ({directory.start})")
        layout.spans[name] = Span(record.shown, start, record.compressed, record.size, record.method, record.crc)
        spans.append((off, start + record.compressed, record.shown))
    spans.sort()
    for (_, e1, n1), (s2, _, n2) in zip(spans, spans[1:]):
        if s2 < e1:
            raise CheckpointError(path, "corrupted", f"zip records {n1} and {n2} overlap: the directory is damaged")


def read(path: Path, layout: Layout, name: str) -> bytes:
    """The bytes torch reads for record ``name`` (``"data.pkl"``), inflated within its bounds;
    ``corrupted`` when absent or when its deflate stream is damaged."""
    span = layout.find(name)
    if span is None:
        raise CheckpointError(path, "corrupted", f"zip record {layout.folder}{name} is absent")
    return read_span(path, span, layout.memory)


def read_span(path: Path, span: Span, memory: bytes | None = None) -> bytes:
    """The bytes torch reads for the record at ``span``, inflated within its bounds (from ``memory``,
    the archive's bytes, when it is in memory)."""
    if not span.stored:  # miniz reads nothing of an empty record, whatever its method
        return b""
    if memory is not None:
        raw = memory[span.start:span.start + span.stored]
    else:
        try:
            with open(path, "rb") as f:
                raw = os.pread(f.fileno(), span.stored, span.start)
        except OSError as e:
            raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    return raw if span.method == STORED else _inflate(path, span, raw)


def _inflate(path: Path, span: Span, raw: bytes) -> bytes:
    # never more than the declared size, which check() bounded: a bomb stops there
    who = f"zip record {span.record}"
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, span.size)
        if not inflater.eof and inflater.decompress(inflater.unconsumed_tail, 1):
            raise CheckpointError(path, "corrupted", f"{who} inflates to more than the {span.size} bytes "
                                                     "its directory entry declares")
    except zlib.error as e:
        raise CheckpointError(path, "corrupted", f"{who}: its deflate stream is damaged ({e})") from None
    if not inflater.eof or len(out) != span.size:
        raise CheckpointError(path, "corrupted", f"{who}: its deflate stream ends after {len(out)} bytes "
                                                 f"of the {span.size} its directory entry declares")
    return out


def check_crcs(path: Path, layout: Layout, *, spans: list[Span] | None = None,
               computed: dict[str, int] | None = None) -> None:
    """Every record's bytes against its stored CRC32 (``corrupted`` naming the first that fails).

    torch.load checks none: a reader of values that skipped this would read changed bytes that
    ``verify`` refuses. ``spans``: these records only (in the archive's order); ``computed``:
    CRCs already computed of some of them, by record (:attr:`Span.record`); the others are read here."""
    spans = list(layout.spans.values()) if spans is None else spans
    crcs = dict(computed or {})
    crcs.update(record_crcs(path, [span for span in spans if span.record not in crcs]))
    for span in spans:
        if crcs[span.record] != span.crc:
            raise CheckpointError(path, "corrupted", f"zip record {span.record} fails its CRC check: "
                                                     "its bytes changed after saving")


def record_crcs(path: Path, spans: list[Span]) -> dict[str, int]:
    """The CRC32 of each record's bytes as torch reads them (inflated when compressed), by record."""
    stored = [span for span in spans if span.method == STORED and span.stored]
    crcs = {span.record: crc32(read_span(path, span)) for span in spans if span.method != STORED or not span.stored}
    if not stored:
        return crcs
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            try:
                # the CRC lets go of the GIL: the records are checked on every core at once
                with ThreadPoolExecutor(max_workers=min(len(stored), os.cpu_count() or 1) or 1) as pool:
                    crcs.update(zip((span.record for span in stored), pool.map(
                        lambda span: crc32(view[span.start:span.start + span.stored]), stored)))
            finally:
                view.release()
    except (OSError, ValueError) as e:
        raise CheckpointError(path, "unreadable", str(e)) from None
    return crcs


def check_storages(path: Path, layout: Layout, data_pkl: bytes) -> list[str]:
    """Each storage record is exactly as long as its tensors' storage; names of meta tensors."""
    try:
        tree, _ = pickle_stub.run(data_pkl)
    except ValueError as e:
        raise CheckpointError(path, "corrupted", f"data.pkl cannot be decoded ({e.args[0]})") from None
    dataless: list[str] = []
    for where, obj in pickle_stub.walk(tree):
        if isinstance(obj, pickle_stub.Stub) and obj.global_name == _META:
            dataless.append(where)
        elif isinstance(obj, pickle_stub.Stub) and obj.global_name == _REBUILD:
            _check_tensor(path, layout, where, obj.args)
    return sorted(dataless)


def _check_tensor(path: Path, layout: Layout, name: str, args: tuple) -> None:
    try:
        pid, offset, shape, stride = args[0].pid, args[1], tuple(args[2]), tuple(args[3])
        _, storage_type, key, _, numel = pid
        itemsize = storage_itemsize(storage_type)
        ints = [offset, numel, *shape, *stride]
        if not all(type(v) is int for v in ints) or min(ints) < 0 or len(shape) != len(stride):
            raise ValueError("sizes are not non-negative integers")
    except (AttributeError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(path, "corrupted", f"data.pkl: tensor {name} is described in a damaged way ({e})") from None
    span = layout.find(f"data/{key}")
    if span is None:
        raise CheckpointError(path, "corrupted", f"tensor {name}: its storage record {layout.folder}data/{key} is absent")
    if span.size != numel * itemsize:
        raise CheckpointError(
            path, "corrupted",
            f"tensor {name}: storage record {span.record} holds {span.size} bytes, its storage needs {numel * itemsize}")
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
