"""torch.save files: the zip format (metadata from the archive, values memory-mapped) and the legacy pickle stream."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import CheckpointError
from . import pickle_scan, stored as stored_mod

_LEGACY_PICKLES = 5  # magic, protocol, sys info, the object, storage keys


def read_zip(path: Path, *, meta: bool, weights_only: bool = True) -> tuple[Any, dict | None]:
    """``(tree, stored)`` of a torch zip file; ``meta=True`` reads no tensor data."""
    reader = _open_reader(path)
    records = _records(path, reader)
    if weights_only:
        pickle_scan.scan(path, _record(path, reader, "data.pkl"), "data.pkl")
    stored = None
    if stored_mod.RECORD in records:
        stored = stored_mod.decode(_record(path, reader, stored_mod.RECORD), path)
    del reader
    tree = _torch_load(path, meta=meta, weights_only=weights_only, zip_format=True)
    return tree, stored


def read_legacy(path: Path, *, meta: bool, weights_only: bool = True) -> Any:
    """The tree of a legacy (non-zip) torch file. It cannot be read without its data:
    it is loaded in full, then turned into meta tensors when ``meta=True``."""
    if weights_only:
        scan_legacy(path)
    tree = _torch_load(path, meta=False, weights_only=weights_only, zip_format=False)
    return to_meta(tree) if meta else tree


def scan_legacy(path: Path) -> None:
    """Refuse (``unsafe``) a legacy file whose pickles ask for disallowed globals."""
    try:
        with open(path, "rb") as f:
            for _ in range(_LEGACY_PICKLES):
                try:
                    pickle_scan.scan(path, f, "the pickle")
                except CheckpointError as e:
                    # The scan ran out of bytes at the end of the file: cut short, not damaged.
                    if e.kind == "corrupted" and f.tell() >= os.fstat(f.fileno()).st_size:
                        raise _legacy_error(path, EOFError()) from None
                    raise
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None


def scan_bare_pickle(path: Path) -> None:
    """A pickle without torch's framing: ``unsafe`` if it asks for disallowed globals, else ``not-a-checkpoint``."""
    with open(path, "rb") as f:
        pickle_scan.scan(path, f, "the pickle")
    raise CheckpointError(
        path, "not-a-checkpoint",
        "a bare pickle (pickle.dump), not a torch.save file: it has neither the zip layout nor the legacy magic number",
    )


def write_zip(tensors: dict[str, torch.Tensor], tmp: Path, stored: dict) -> None:
    """torch.save the tensors (shared storages stay shared), then append the stored metadata record."""
    torch.save({k: v.detach() for k, v in tensors.items()}, tmp)
    with zipfile.ZipFile(tmp, "a") as zf:
        archive = zf.namelist()[0].split("/", 1)[0]
        zf.writestr(f"{archive}/{stored_mod.RECORD}", stored_mod.encode(stored))


def verify_zip(path: Path) -> None:
    """Every record's CRC, the pickle (weights-only, on meta) and the stored metadata."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as e:
        raise _zip_error(path, e) from None
    except (FileNotFoundError, PermissionError) as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    except Exception as e:  # zipfile raises many types on damaged headers (NotImplementedError, zlib.error, ...)
        raise CheckpointError(path, "corrupted", f"zip records cannot be read ({type(e).__name__}: {_first_line(e)})") from None
    if bad is not None:
        raise CheckpointError(path, "corrupted", f"zip record {bad} fails its CRC check: its bytes changed after saving")
    tree, stored = read_zip(path, meta=True)
    stored_mod.check(path, stored, tree)


def verify_legacy(path: Path) -> None:
    """A legacy file has no checksums: it is valid when it loads (weights-only)."""
    read_legacy(path, meta=True)


def to_meta(tree: Any) -> Any:
    """Real tensors -> meta tensors with the same views; a shared storage stays shared."""
    storages: dict[tuple, torch.UntypedStorage] = {}

    def convert(t: torch.Tensor) -> torch.Tensor:
        src = t.untyped_storage()
        key = (src.data_ptr(), src.nbytes())
        ms = storages.get(key)
        if ms is None:
            ms = torch.UntypedStorage(src.nbytes(), device="meta")
            # A stand-in for torch's file offset, so tensor_storage_key sees the sharing.
            ms._checkpoint_offset = ("legacy", len(storages))
            storages[key] = ms
        return torch.empty(0, dtype=t.dtype, device="meta").set_(ms, t.storage_offset(), t.shape, t.stride())

    return map_tensors(tree, convert)


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


def _open_reader(path: Path):
    try:
        return torch._C.PyTorchFileReader(str(path))
    except Exception as e:  # torch raises RuntimeError with the miniz message
        raise _zip_error(path, e) from None


def _records(path: Path, reader) -> set[str]:
    try:
        records = set(reader.get_all_records())
    except Exception as e:  # a damaged central directory (names that do not decode)
        raise CheckpointError(path, "corrupted", f"the zip directory is damaged ({_first_line(e)})") from None
    if "data.pkl" not in records:
        if "constants.pkl" in records:
            raise CheckpointError(path, "unreadable", "a TorchScript archive (torch.jit.save), not a state dict: load it with torch.jit.load")
        raise CheckpointError(path, "not-a-checkpoint", "a zip file without data.pkl: not written by torch.save")
    return records


def _record(path: Path, reader, name: str) -> bytes:
    try:
        return bytes(reader.get_record(name))
    except Exception as e:  # damaged local header or CRC mismatch
        raise CheckpointError(path, "corrupted", f"zip record {name} cannot be read ({_first_line(e)})") from None


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
            reader = torch._C.PyTorchFileReader(str(path))
            pickle_scan.scan(path, bytes(reader.get_record("data.pkl")), "data.pkl")
        else:
            scan_legacy(path)
    except CheckpointError as err:
        if err.kind == "unsafe":
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
