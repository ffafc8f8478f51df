"""torch.save files: the zip format (metadata from the archive, values memory-mapped), the legacy
pickle stream, and bare pickles (refused: unsafe, or not a checkpoint)."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Mapping

import torch

from ..errors import CheckpointError
from . import atomic, pickle_scan, pickle_stub, record_crcs, stored as stored_mod, zipcheck
from .registry import Contents, Format, register

_LEGACY_PICKLES = 5  # magic, protocol, sys info, the object, storage keys
_LEGACY_OBJECT = 3  # the pickle of the object itself: its persistent ids are the storages
ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy format opens with a pickled LONG1 of this magic number.
LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def read_zip(path: Path, *, meta: bool, weights_only: bool = True, defer_crcs: bool = False) -> Contents:
    """A torch zip file; ``meta=True`` reads no tensor data. ``defer_crcs``: the CRCs of the
    tensor records are left to whoever compares the values (``Contents.crcs``)."""
    # DTensors are refused with or without weights_only; unsafe globals only with it
    layout = _open_zip(path, allowlist=weights_only)
    deferred: list[zipcheck.Span] = []
    if not meta:  # values are read: the bytes verify would refuse are refused here too
        if defer_crcs and not record_crcs.byteswapped(path, layout):
            deferred = [span for name, span in layout.spans.items()
                        if name.startswith("data/") and span.method == zipcheck.STORED and span.size]
        later = {span.record for span in deferred}
        zipcheck.check_crcs(path, layout, spans=[s for s in layout.spans.values() if s.record not in later])
    stored = None
    if stored_mod.RECORD in layout:
        stored = stored_mod.decode(zipcheck.read(path, layout, stored_mod.RECORD), path)
    tree = _torch_load(path, meta=meta, weights_only=weights_only, zip_format=True)
    stored_mod.check(path, stored, tree)  # what verify refuses, every read refuses
    crcs = record_crcs.RecordCrcs(path, layout, deferred, tensors_in(tree)) if deferred else None
    return Contents(path, "torch", tree, meta, stored=stored, ties_expressible=True, files=[path],
                    tie_key=_zip_tie_key if meta else None, crcs=crcs)


def _open_zip(path: Path, *, allowlist: bool = True) -> zipcheck.Layout:
    """The archive read as torch reads it, before anything is inflated or unpickled (sizes
    bounded, compression bounded), then its data.pkl scanned and its storages checked."""
    layout = zipcheck.check(path)
    if "data.pkl" not in layout:
        if "constants.pkl" in layout:
            raise CheckpointError(path, "unreadable", "a TorchScript archive (torch.jit.save), not a state dict: load it with torch.jit.load")
        raise CheckpointError(path, "not-a-checkpoint", "a zip file without data.pkl: not written by torch.save")
    data_pkl = zipcheck.read(path, layout, "data.pkl")
    pickle_scan.scan(path, data_pkl, "data.pkl", allowlist=allowlist, advise=True)
    layout.dataless = zipcheck.check_storages(path, layout, data_pkl)
    return layout


def without_data(names: list[str]) -> str:
    """Why a file whose tensors ``names`` were saved as meta tensors is ``incomplete``.

    >>> without_data(["bias"])
    '1 tensor without data (saved as meta tensors): bias'
    """
    n = len(names)
    shown = ", ".join(names[:3]) + (f" and {n - 3} more" if n > 3 else "")
    return f"{n} tensor{'s' if n > 1 else ''} without data (saved as meta tensors): {shown}"


def _zip_tie_key(t: torch.Tensor) -> Hashable | None:
    # torch.load(map_location="meta") marks each storage with its record's offset in the file
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
        return None
    offset = getattr(storage, "_checkpoint_offset", None)
    if offset is None or storage.nbytes() == 0:
        return None
    return (offset, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def read_legacy(path: Path, *, meta: bool, weights_only: bool = True) -> Contents:
    """A legacy (non-zip) torch file. It cannot be read without its data: it is loaded
    in full, then turned into meta tensors when ``meta=True``."""
    scan_legacy(path, allowlist=weights_only)
    tree = _torch_load(path, meta=False, weights_only=weights_only, zip_format=False)
    tie_key = None
    if meta:
        tree, tie_key = to_meta(tree)
    return Contents(path, "torch-legacy", tree, meta, ties_expressible=True, files=[path],
                    tie_key=tie_key)


def scan_legacy(path: Path, *, allowlist: bool = True) -> None:
    """Refuse a legacy file of DTensors, or (``unsafe``) whose pickles ask for disallowed globals,
    or (``corrupted``) whose storages claim more bytes than the file holds (torch.load would
    allocate them before reading)."""
    try:
        with open(path, "rb") as f:
            for i in range(_LEGACY_PICKLES):
                start = f.tell()
                try:
                    pickle_scan.scan(path, f, "the pickle", allowlist=allowlist, advise=True)
                    if i == _LEGACY_OBJECT:
                        end = f.tell()
                        f.seek(start)
                        _bound_storages(path, f.read(end - start), os.fstat(f.fileno()).st_size)
                except CheckpointError as e:
                    # The scan ran out of bytes at the end of the file: cut short, not damaged.
                    if e.kind == "corrupted" and f.tell() >= os.fstat(f.fileno()).st_size:
                        raise _legacy_error(path, EOFError()) from None
                    raise
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None


def _bound_storages(path: Path, raw: bytes, size: int) -> None:
    """The storages a legacy pickle declares fit in the file (each is stored in full after it)."""
    try:
        tree, _ = pickle_stub.run(raw)
    except ValueError:
        return  # torch.load says how it is damaged
    need: dict[Any, int] = {}
    for _, obj in pickle_stub.walk(tree):
        pid = getattr(obj, "pid", None) if isinstance(obj, pickle_stub.Persistent) else None
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            numel = pid[4]
            if type(numel) is not int or numel < 0:
                raise CheckpointError(path, "corrupted", f"a storage declares {numel!r} elements")
            try:
                itemsize = zipcheck.storage_itemsize(pid[1])
            except ValueError:  # a type torch.load refuses itself: count its elements as bytes
                itemsize = 1
            need[pid[2] if isinstance(pid[2], (str, int)) else id(pid)] = numel * itemsize
    if sum(need.values()) > size:
        raise CheckpointError(
            path, "corrupted",
            f"its storages claim {sum(need.values())} bytes but the file has {size}: not read (torch.load would allocate them first)")


def write_zip(tensors: Mapping[str, torch.Tensor], tmp: Path, stored: dict, ties=()) -> None:
    """torch.save the tensors (shared storages stay shared), then append the stored metadata record."""
    with atomic.under_target_name(tmp) as named:  # the zip's folder is the target's name
        torch.save({k: v.detach() for k, v in tensors.items()}, named)
    with zipfile.ZipFile(tmp, "a") as zf:
        archive = zf.namelist()[0].split("/", 1)[0]
        zf.writestr(f"{archive}/{stored_mod.RECORD}", stored_mod.encode(stored))


def verify_zip(path: Path) -> None:
    """The layout, every record's CRC, the pickle (weights-only, on meta) and the stored metadata;
    a tensor saved without data (a meta tensor) is ``incomplete``."""
    layout = _open_zip(path)
    if layout.dataless:
        raise CheckpointError(path, "incomplete", without_data(layout.dataless))
    zipcheck.check_crcs(path, layout)
    read_zip(path, meta=True)  # the pickle, weights-only, and the stored metadata


def verify_legacy(path: Path) -> None:
    """A legacy file has no checksums: it is valid when it loads (weights-only)."""
    read_legacy(path, meta=True)


def to_meta(tree: Any) -> tuple[Any, Callable[[torch.Tensor], Hashable | None]]:
    """Real tensors -> meta tensors with the same views, and the tie key that tells
    which of them viewed one storage (a meta tensor has no address to compare)."""
    storages: dict[tuple, tuple[int, torch.UntypedStorage]] = {}
    ordinal_of: dict[int, int] = {}  # id(meta tensor) -> its source storage's ordinal

    def convert(t: torch.Tensor) -> torch.Tensor:
        src = t.untyped_storage()
        key = (src.data_ptr(), src.nbytes())
        if key not in storages:
            storages[key] = (len(storages), torch.UntypedStorage(src.nbytes(), device="meta"))
        ordinal, ms = storages[key]
        out = torch.empty(0, dtype=t.dtype, device="meta").set_(ms, t.storage_offset(), t.shape, t.stride())
        if src.nbytes():
            ordinal_of[id(out)] = ordinal
        return out

    def tie_key(t: torch.Tensor) -> Hashable | None:
        ordinal = ordinal_of.get(id(t))
        return None if ordinal is None else (ordinal, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)

    return map_tensors(tree, convert), tie_key


def map_tensors(tree: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor leaf of nested dicts, lists and tuples, keeping container types."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        out = OrderedDict() if isinstance(tree, OrderedDict) else {}
        for k, v in tree.items():
            out[k] = map_tensors(v, fn)
        return out
    if isinstance(tree, list):
        return [map_tensors(v, fn) for v in tree]
    if isinstance(tree, tuple):
        items = [map_tensors(v, fn) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return tree


def tensors_in(tree: Any) -> Iterator[torch.Tensor]:
    """Every tensor leaf of nested dicts, lists and tuples (iterative: any depth)."""
    todo = [tree]
    while todo:
        obj = todo.pop()
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            todo.extend(obj)


def _torch_load(path: Path, *, meta: bool, weights_only: bool, zip_format: bool) -> Any:
    # torch.load picks safetensors by suffix alone; a torch file named so must go through a file object.
    by_name = not str(path).endswith(".safetensors")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if by_name:
                return torch.load(
                    path, map_location="meta" if meta else "cpu", weights_only=weights_only,
                    mmap=zip_format,
                )
            with open(path, "rb") as f:
                return torch.load(f, map_location="meta" if meta else "cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        raise _unpickling_error(path, e, zip_format) from None
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    except RuntimeError as e:
        raise (_zip_error(path, e) if zip_format else _legacy_error(path, e)) from None
    except Exception as e:  # the pickle decoded into nonsense: damaged bytes
        if not zip_format and isinstance(e, EOFError):
            raise _legacy_error(path, e) from None
        raise CheckpointError(path, "corrupted", f"the pickle cannot be decoded ({type(e).__name__}: {_first_line(e)})") from None


def _unpickling_error(path: Path, e: Exception, zip_format: bool) -> CheckpointError:
    # Name the globals from the opcodes, not from torch's message text.
    try:
        if zip_format:
            layout = zipcheck.check(path)
            pickle_scan.scan(path, zipcheck.read(path, layout, "data.pkl"), "data.pkl", advise=True)
        else:
            scan_legacy(path)
    except CheckpointError as err:
        if err.kind in ("unsafe", "needs-safe-globals"):
            return err
    except Exception:
        pass
    text = _first_line(e)
    if "Unsupported global" in text or "unrecognized function" in text or "Can only create new object" in text:
        return CheckpointError(path, "unsafe", f"weights-only loading refused it: {text}")
    return CheckpointError(path, "corrupted", f"the pickle cannot be decoded ({text})")


def _zip_error(path: Path, e: BaseException) -> CheckpointError:
    size = _size(path)
    text = _first_line(e)
    if _has_end_record(path):  # the directory's end record is there: damaged, not cut short
        return CheckpointError(path, "corrupted", f"the zip archive is damaged ({text})")
    if "central directory" in text or "End of central directory" in text or "not a zip file" in text.lower() \
            or "failed reading zip archive" in text:
        return CheckpointError(
            path, "truncated",
            f"zip central directory not found (file is {size} bytes; an interrupted save?)",
        )
    return CheckpointError(path, "corrupted", f"the zip archive is damaged ({text})")


def _legacy_error(path: Path, e: BaseException) -> CheckpointError:
    text = _first_line(e) or type(e).__name__
    if isinstance(e, EOFError) or "unexpected EOF" in text or "end of file" in text.lower() \
            or "Ran out of input" in text:
        return CheckpointError(path, "truncated", f"the file ends early (file is {_size(path)} bytes; an interrupted save?)")
    return CheckpointError(path, "corrupted", f"the legacy torch file cannot be read ({text})")


def _has_end_record(path: Path) -> bool:
    # torch writes no zip comment, so an intact file ends with the 22-byte end-of-directory record.
    try:
        with open(path, "rb") as f:
            f.seek(max(0, _size(path) - 22))
            return f.read(4) == b"PK\x05\x06"
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def is_legacy(head: bytes, partial: bool = False) -> bool:
    # b"\x80<proto>\x8a\x0a" + magic: PROTO, then LONG1 with 10 bytes.
    expected = b"\x80?\x8a\x0a" + LEGACY_MAGIC
    n = len(head) if partial else len(expected)
    if len(head) < n or n == 0:
        return False
    return all(e == ord("?") and i == 1 or head[i] == e for i, e in enumerate(expected[:n]))


ZIP = register(Format(
    "torch", read=read_zip, verify=verify_zip, defers_crcs=True,
    sniff=lambda path, head: head.startswith(ZIP_MAGIC),
    cut_short=lambda head: ZIP_MAGIC.startswith(head[:4]),
    write=write_zip,
))
LEGACY = register(Format(
    "torch-legacy", read=read_legacy, verify=verify_legacy,
    sniff=lambda path, head: is_legacy(head),
    cut_short=lambda head: is_legacy(head, partial=True),
))
