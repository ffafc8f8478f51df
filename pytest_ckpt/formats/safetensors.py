"""safetensors files: the header parsed by hand (one read), values sliced from one private memory map."""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Hashable, Mapping

import torch

from ..errors import CheckpointError
from . import stored as stored_mod, strict_json
from .checksum import crc32
from .registry import Contents, Format, register

_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_FIRST_READ = 1 << 16  # most headers fit: one read
_MAX_ELEMENTS = 1 << 48  # an empty tensor's other dimensions: beyond this torch cannot index it
_U64 = 1 << 64  # shapes and offsets are u64 to the safetensors library
#: the fields the safetensors library refuses to see twice in one object
_FIELDS = frozenset({"__metadata__", "dtype", "shape", "data_offsets"})

DTYPES: dict[str, torch.dtype] = {
    code: getattr(torch, name)
    for code, name in {
        "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "I32": "int32",
        "I64": "int64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
        "F64": "float64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
        "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
        "F8_E8M0": "float8_e8m0fnu", "U16": "uint16", "U32": "uint32", "U64": "uint64",
        "C64": "complex64",
    }.items()
    if isinstance(getattr(torch, name, None), torch.dtype)
}
CODES: dict[torch.dtype, str] = {dtype: code for code, dtype in DTYPES.items()}
_ITEMSIZES: dict[str, int] = {code: dtype.itemsize for code, dtype in DTYPES.items()}


class Header:
    """A parsed safetensors header: entries ``(name, dtype, shape, begin, end)`` in header order."""

    __slots__ = ("entries", "metadata", "data_start", "file_size")

    def __init__(self, entries, metadata, data_start, file_size):
        self.entries: list[tuple[str, torch.dtype, list[int], int, int]] = entries
        self.metadata: dict[str, str] = metadata
        self.data_start: int = data_start
        self.file_size: int = file_size

    @property
    def data_size(self) -> int:
        return self.file_size - self.data_start


def read_header(path: Path) -> Header:
    """Parse and check a header: dtypes known, byte ranges match shapes and lie inside the file."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_FIRST_READ)
            if len(head) < 8:
                raise CheckpointError(path, "truncated", f"the file is {size} bytes: shorter than a safetensors header length")
            (n,) = struct.unpack("<Q", head[:8])
            if n > _MAX_HEADER:
                raise CheckpointError(path, "corrupted", f"the header length field says {n} bytes: not a plausible safetensors header")
            if 8 + n > size:
                raise CheckpointError(path, "truncated", f"the header claims {n} bytes but the file has {size - 8} after the length field (an interrupted save?)")
            raw = head[8:8 + n]
            if len(raw) < n:
                raw += f.read(n - len(raw))
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    header, plain = _parse(path, raw)
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(path, "corrupted", "the safetensors __metadata__ is not a JSON object of strings")
    data_size = size - 8 - n
    entries = []
    end_max = 0
    dtypes, itemsizes, prod, u64 = DTYPES, _ITEMSIZES, math.prod, _U64  # locals: 723 entries in a 70B shard set
    for name, info in header.items():
        try:
            code = info["dtype"]
            dtype = dtypes[code]
            shape = info["shape"]
            begin, end = info["data_offsets"]
            # min() and prod() in C; each dimension's type only where a float or a bool can be
            ok = (type(begin) is int and type(end) is int and type(shape) is list
                  and 0 <= begin <= end < u64 and (plain or all(type(d) is int for d in shape))
                  and end - begin == prod(shape) * itemsizes[code] and (not shape or min(shape) >= 0))
            if ok and begin == end and shape:  # empty: the other dimensions are unbounded by the bytes
                ok = max(shape) < _U64 and math.prod(d or 1 for d in shape) < _MAX_ELEMENTS
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(path, "corrupted", f"the header entry for {name!r}: {_fault(info)}")
        if end > end_max:
            end_max = end
        entries.append((name, dtype, shape, begin, end))
    if end_max > data_size:
        raise CheckpointError(
            path, "truncated",
            f"the safetensors header claims {end_max} bytes of data but the file has {data_size} (an interrupted save?)",
        )
    _check_coverage(path, entries, data_size)
    return Header(entries, metadata, 8 + n, size)


def _parse(path: Path, raw: bytes) -> tuple[dict, bool]:
    """The header as the safetensors library parses it (:mod:`.strict_json`): what it refuses is
    refused here too. ``plain``: it holds no float and no true/false."""
    try:
        header, plain = strict_json.loads(raw, fields=_FIELDS)
    except strict_json.Refused as e:
        raise CheckpointError(path, "corrupted", f"the safetensors header is one the safetensors library "
                                                 f"refuses: {e}") from None
    except ValueError as e:
        raise CheckpointError(path, "corrupted", f"the safetensors header is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(path, "corrupted", "the safetensors header nests too deeply to be a header") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "corrupted", "the safetensors header is not a JSON object")
    return header, plain


def _fault(info: Any) -> str:
    """Which field of a tensor's header entry is wrong, in the safetensors library's terms."""
    if not isinstance(info, dict):
        return f"it is {type(info).__name__}, not an object"
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            return f"the field {key} is missing"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        return f"dtype {dtype!r} is not a safetensors dtype"
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < _U64 for d in shape):
        return f"shape {shape!r} is not a list of unsigned integers"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(
            type(x) is int and 0 <= x < _U64 for x in offsets):
        return f"data_offsets {offsets!r} is not a pair of unsigned integers"
    begin, end = offsets
    if begin > end or end - begin != math.prod(shape) * DTYPES[dtype].itemsize:
        return f"data_offsets [{begin}, {end}) do not fit shape {shape} of {dtype}"
    return f"shape {shape} has {math.prod(d or 1 for d in shape)} elements beside a zero: more than torch can index"


def _check_coverage(path: Path, entries, data_size: int) -> None:
    """The byte ranges tile the data region from 0 to its end, as the safetensors library requires:
    a file it refuses is refused here too."""
    pos = 0
    for _, _, _, begin, end in entries:  # writers lay tensors out in header order: no sort then
        if begin != pos:
            break
        pos = end
    else:
        if pos == data_size:
            return
    pos = 0
    for begin, end, name in sorted((b, e, name) for name, _, _, b, e in entries):
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap of {begin - pos} bytes"
            raise CheckpointError(path, "corrupted", f"the byte range of {name!r} {what}")
        pos = end
    if pos != data_size:
        raise CheckpointError(path, "corrupted", f"the header accounts for {pos} bytes of data but the file has {data_size}: trailing bytes")


def read(path: Path, *, meta: bool, weights_only: bool = True, header: Header | None = None) -> Contents:
    """``meta=True`` reads only the header. Aliases recorded by ``write`` are re-created as one tensor."""
    header = header or read_header(path)
    stored = None
    if stored_mod.META_KEY in header.metadata:
        stored = stored_mod.decode(header.metadata[stored_mod.META_KEY], path)
    ties = _ties(stored)
    try:
        if meta:
            tensors = _meta(header.entries, own={g[0] for g in ties})
        else:  # values are read: the bytes verify would refuse are refused here too
            check_crc(path, header)
            tensors = _values(path, header)
    except (TypeError, ValueError) as e:  # a shape of non-integers that passed the size check
        raise CheckpointError(path, "corrupted", f"a header shape is malformed ({e})") from None
    for group in ties:
        first = tensors.get(group[0])
        if first is None:
            raise CheckpointError(path, "corrupted", f"the stored tie group {group} names {group[0]!r}, which is not in the file")
        for alias in group[1:]:
            tensors[alias] = first
    stored_mod.check(path, stored, tensors)  # what verify refuses, every read refuses
    # only pc.save records ties in a safetensors file: other writers' files cannot express them
    expressible = bool(stored and "ties" in stored)
    return Contents(path, "safetensors", tensors, meta, stored=stored, ties_expressible=expressible,
                    files=[path], tie_key=_alias_key({id(tensors[g[0]]) for g in ties}) if meta else None)


def _meta(entries, *, own: set[str]) -> dict[str, torch.Tensor]:
    """Meta tensors of the entries. A meta tensor holds no bytes: names of one shape and dtype
    share one (a 70B model has a few such pairs, 723 names), and the names of a stored tie
    group get their own, since the tie key is the object's identity."""
    shared: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, dtype, shape, _, _ in entries:
        if name in own:
            out[name] = torch.empty(shape, dtype=dtype, device="meta")
            continue
        key = (dtype, *shape)
        t = shared.get(key)
        if t is None:
            t = shared[key] = torch.empty(shape, dtype=dtype, device="meta")
        out[name] = t
    return out


def _alias_key(tied: set[int]):
    # aliases are the same tensor object: its identity is the storage's, for the tied ones
    def key(t: torch.Tensor) -> Hashable | None:
        return id(t) if id(t) in tied else None
    return key


def _values(path: Path, header: Header) -> dict[str, torch.Tensor]:
    try:
        # MAP_PRIVATE: the pages are the file's until written; nothing is copied up front.
        storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=header.file_size)
    except RuntimeError as e:
        raise CheckpointError(path, "unreadable", f"cannot memory-map the file ({str(e).splitlines()[0]})") from None
    buf = torch.empty(0, dtype=torch.uint8).set_(storage)
    start = header.data_start
    out = {}
    for name, dtype, shape, begin, end in header.entries:
        piece = buf[start + begin:start + end]
        if (start + begin) % dtype.itemsize:  # a view needs alignment: copy this one
            piece = piece.clone()
        out[name] = piece.view(dtype).reshape(shape)
    return out


def _ties(stored: dict | None) -> list[list[str]]:
    ties = (stored or {}).get("ties") or []
    return [list(g) for g in ties if isinstance(g, (list, tuple)) and len(g) > 1 and all(isinstance(n, str) for n in g)]


def write(tensors: Mapping[str, torch.Tensor], tmp: Path, stored: dict, ties) -> None:
    """Write each storage once (aliases live in ``stored["ties"]``) with a CRC32 of the data region."""
    aliases = {name for group in ties for name in group[1:]}
    kept = []
    for name, t in tensors.items():
        if name in aliases:
            continue
        if t.dtype not in CODES:
            raise TypeError(f"{name}: safetensors cannot store dtype {t.dtype}")
        kept.append((name, t.detach().to("cpu").contiguous()))
    # Wider dtypes first, so every tensor starts aligned for its dtype.
    layout = sorted(kept, key=lambda nt: (-nt[1].element_size(), nt[0]))
    offsets, pos = {}, 0
    for name, t in layout:
        nbytes = t.numel() * t.element_size()
        offsets[name] = (pos, pos + nbytes)
        pos += nbytes
    crc = 0
    for _, t in layout:
        crc = crc32(_bytes(t), crc)
    metadata = {stored_mod.META_KEY: stored_mod.encode(stored), stored_mod.CRC_KEY: f"{crc:08x}"}
    header: dict[str, Any] = {"__metadata__": metadata}
    for name, t in kept:  # header keeps the caller's order; offsets follow the layout
        header[name] = {"dtype": CODES[t.dtype], "shape": list(t.shape), "data_offsets": list(offsets[name])}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, t in layout:
            f.write(_bytes(t))


def _bytes(t: torch.Tensor) -> memoryview:
    # A view of the tensor's bytes, no copy (the tensor is contiguous and on CPU).
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * n).from_address(t.data_ptr())).cast("B")


def verify(path: Path) -> Header:
    """Header valid, ranges contiguous from 0, exact file size, data CRC (if stored), stored schema."""
    header = read_header(path)  # ranges contiguous from 0 to the end: checked on every read
    check_crc(path, header)
    read(path, meta=True, header=header)  # the stored metadata against the header
    return header


def check_crc(path: Path, header: Header) -> None:
    """The data region against the CRC32 ``pc.save`` stored (files of other writers have none)."""
    want = header.metadata.get(stored_mod.CRC_KEY)
    if want is not None:
        got = _crc(path, header.data_start)
        if f"{got:08x}" != want:
            raise CheckpointError(path, "corrupted", f"the data CRC32 is {got:08x} but {want} was stored: the tensor bytes changed after saving")


def _crc(path: Path, start: int) -> int:
    crc = 0
    try:
        with open(path, "rb") as f:
            f.seek(start)
            while chunk := f.read(1 << 24):
                crc = crc32(chunk, crc)
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    return crc


def _sniff(path: Path, head: bytes) -> bool:
    # a plausible 8-byte header length, then the JSON header's opening brace (JSON allows whitespace first)
    return (len(head) > 8 and 0 < struct.unpack("<Q", head[:8])[0] <= _MAX_HEADER
            and head[8:].lstrip(b" \t\n\r")[:1] == b"{")


FORMAT = register(Format("safetensors", read=read, verify=verify, sniff=_sniff, write=write,
                         suffixes=(".safetensors",)))
