"""torch.distributed.checkpoint (DCP) directories: a pickled ``.metadata`` plus ``*.distcp`` storage files."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import io
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from . import pickle_scan, zipcheck
from .paths import inside, regular
from .registry import Contents, Format, register

METADATA = ".metadata"
_ZIP = b"PK\x03\x04"  # a local header: how torch.load knows a zip from a legacy pickle stream
_SAFE_EXTRA = frozenset({
    "torch.Size", "torch.serialization._get_layout", "collections.OrderedDict",
    "pathlib.PosixPath", "pathlib.PurePosixPath", "pathlib.WindowsPath", "pathlib.PureWindowsPath",
    "builtins.set", "builtins.frozenset",
})


def _resolve(full: str) -> Any:
    module, _, name = full.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _allowed(full: str) -> bool:
    """Metadata may name DCP's own dataclasses and enums, torch dtypes/layouts/formats and a few plain types."""
    if full in _SAFE_EXTRA:
        return True
    module, _, name = full.rpartition(".")
    try:
        if module == "torch":
            return isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format))
        if module.startswith("torch.distributed.checkpoint."):
            obj = _resolve(full)
            return isinstance(obj, type) and (dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum))
    except Exception:  # a name that does not import is not allowed
        return False
    return False


class _MetadataUnpickler(pickle.Unpickler):
    # Second line of defence after the opcode scan: only allowlisted names resolve.
    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if not _allowed(full):
            raise pickle.UnpicklingError(f"global {full} is not allowed in DCP metadata")
        return _resolve(full)  # what _allowed imported: no other lookup


def read_metadata(path: Path):
    """The DCP ``Metadata``, unpickled with an allowlist (``FileSystemReader.read_metadata`` trusts the pickle)."""
    file = path / METADATA
    regular(file, role=f"the DCP {METADATA}")
    try:
        data = file.read_bytes()
    except OSError as e:
        raise CheckpointError(file, "unreadable", e.strerror or str(e)) from None
    if not data:
        raise CheckpointError(file, "truncated", "the DCP .metadata file is empty (an interrupted save?)")
    try:
        names = pickle_scan.requested_globals(data)
    except Exception as e:  # a damaged stream
        kind = "truncated" if "EOF" in str(e) or "not enough data" in str(e) else "corrupted"
        raise CheckpointError(file, kind, f"the DCP metadata pickle is damaged ({type(e).__name__}: {e})") from None
    pickle_scan.check_globals(file, names, _allowed, "the DCP metadata")
    try:
        md = _MetadataUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # decoded into nonsense
        raise CheckpointError(file, "corrupted", f"the DCP metadata cannot be decoded ({type(e).__name__}: {e})") from None
    if not hasattr(md, "state_dict_metadata"):
        raise CheckpointError(file, "corrupted", f"the DCP metadata holds a {type(md).__name__}, not Metadata")
    return md


def storage_files(path: Path, md) -> dict[str, int]:
    """Each storage file the metadata names -> the bytes it must hold at least."""
    need: dict[str, int] = {}
    try:
        for info in (md.storage_data or {}).values():
            if not (type(info.offset) is int and type(info.length) is int and info.offset >= 0 and info.length >= 0):
                raise ValueError(f"storage range offset={info.offset!r} length={info.length!r}")
            end = info.offset + info.length
            if end > need.get(info.relative_path, -1):
                need[info.relative_path] = end
    except (AttributeError, TypeError, ValueError) as e:  # fields lost to damage
        raise _damaged(path, e) from None
    return need


def _damaged(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(path / METADATA, "corrupted", f"the DCP metadata is damaged ({type(e).__name__}: {e})")


def check_files(path: Path, md) -> list[Path]:
    """Every storage file present and long enough; ``incomplete`` otherwise. Returns the files."""
    files = []
    for rel, end in storage_files(path, md).items():
        file = inside(path, rel, named_by=path / METADATA, what="the storage file")
        regular(file, role=f"storage file {rel} named by {METADATA}")
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise CheckpointError(file, "incomplete", f"storage file {rel} named by {METADATA} is absent (an interrupted save or copy?)") from None
        except OSError as e:
            raise CheckpointError(file, "unreadable", e.strerror or str(e)) from None
        if size < end:
            raise CheckpointError(file, "incomplete", f"storage file {rel} is {size} bytes but {METADATA} needs {end} (an interrupted save?)")
        files.append(file)
    return files


def read(path: Path, *, meta: bool, weights_only: bool = True) -> Contents:
    """The nested tree rebuilt from ``planner_data``; non-tensor entries are None when ``meta``.
    DCP stores every tensor on its own: ties are not expressible."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    md = read_metadata(path)
    files = check_files(path, md)
    flat: dict[str, Any] = {}
    try:
        check_sizes(path, md)
        for fqn, item in md.state_dict_metadata.items():
            if isinstance(item, TensorStorageMetadata):
                flat[fqn] = torch.empty(tuple(item.size), dtype=item.properties.dtype, device="meta" if meta else "cpu")
            else:
                flat[fqn] = None
        planner_data = getattr(md, "planner_data", None) or {}
        if not meta and flat:
            _load_values(path, md, flat, weights_only)
        tree = _nest(flat, planner_data, limit=len(flat))
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:  # fields lost to damage
        raise _damaged(path, e) from None
    return Contents(path, "dcp", tree, meta, files=[path / METADATA, *files])


def verify(path: Path) -> None:
    """What a load reads: the metadata, every storage file and byte range, the tensors, and the
    pickled entries through the weights-only loader. DCP stores no checksums: a flipped bit in
    tensor data is not found."""
    read(path, meta=False)


def check_sizes(path: Path, md) -> None:
    """Every tensor's declared size: non-negative integers, no more bytes than its storage holds."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    stored: dict[str, int] = {}
    for index, info in (md.storage_data or {}).items():
        stored[index.fqn] = stored.get(index.fqn, 0) + info.length
    for fqn, item in md.state_dict_metadata.items():
        if not isinstance(item, TensorStorageMetadata):
            continue
        size = tuple(item.size)
        if not all(type(d) is int and d >= 0 for d in size):
            raise ValueError(f"tensor {fqn!r} has size {size}")
        nbytes = math.prod(size) * item.properties.dtype.itemsize
        if nbytes > stored.get(fqn, 0):
            raise ValueError(f"tensor {fqn!r} of size {size} needs {nbytes} bytes; its storage holds {stored.get(fqn, 0)}")


def _load_values(path: Path, md, flat: dict, weights_only: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import CheckpointException

    planner = _planner(path, weights_only, flatten_state_dict=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.load(flat, storage_reader=_reader(path, md), planner=planner, no_dist=True)
        flat.update(planner.entries)  # dcp.load copies its dicts: the non-tensor values, collected on the side
    except CheckpointError:
        raise
    except CheckpointException as e:  # a BaseException wrapping each rank's (exception, traceback)
        inner = [exc for exc, _ in e.failures.values()]
        for exc in inner:
            if isinstance(exc, CheckpointError):
                raise exc from None
        raise _storage_error(path, inner[0] if inner else e) from None
    except Exception as e:  # damaged storage bytes
        raise _storage_error(path, e) from None


def load_into(state: dict, path: str | Path) -> None:
    """``dcp.load(state, checkpoint_id=path)`` on every rank of the current process group (a
    resharding load into a sharded model's state dict), through the safe readers.

    ``FileSystemReader.read_metadata`` unpickles ``.metadata`` with a plain ``pickle.load`` and
    DCP's planner loads non-tensor entries with ``weights_only=False``: here the metadata is read
    with the allowlist first (``unsafe``, naming the globals, before torch reads anything), and
    each non-tensor entry is scanned, then loaded weights-only.

    >>> load_into({"model": get_model_state_dict(sharded)}, "ckpt/step-100")   # doctest: +SKIP
    """
    path = Path(path)
    md = read_metadata(path)
    import torch.distributed.checkpoint as dcp

    dcp.load(state, storage_reader=_reader(path, md), planner=_planner(path, True))


def _reader(path: Path, md):
    """A ``FileSystemReader`` whose metadata is ``md``, read by :func:`read_metadata` (its own
    ``read_metadata`` trusts the pickle)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Reader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            if kwargs.get("rank") is not None:  # DCP's fallback to a rank's own metadata file
                raise CheckpointError(path / METADATA, "unreadable", "no readable DCP .metadata (rank-local metadata files are not read)")
            if getattr(md, "storage_meta", None) is None:
                md.storage_meta = StorageMeta()
            md.storage_meta.load_id = self.load_id  # what FileSystemReader.read_metadata sets
            return md

    return Reader(str(path))


def _planner(path: Path, weights_only: bool, **kw):
    """DCP's default load planner with its one unsafe read replaced: a non-tensor entry is scanned
    (``unsafe`` names its globals) and loaded weights-only (DCP's own default is ``weights_only=False``).
    ``.entries``: the non-tensor values loaded, by name."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element

    class Planner(DefaultLoadPlanner):
        entries: dict[str, Any] = {}

        def load_bytes(self, read_item, value):
            fqn = read_item.dest_index.fqn
            _scan_entry(path, fqn, value, weights_only)
            try:
                obj = torch.load(value, weights_only=weights_only)
            except pickle.UnpicklingError as e:  # the scan found no global it refuses: damage
                raise CheckpointError(path, "corrupted", f"non-tensor entry {fqn!r} cannot be read ({str(e).splitlines()[0][:200]})") from None
            self.entries[fqn] = obj
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[fqn], obj)
            else:
                self.state_dict[fqn] = obj

    planner = Planner(**kw)
    planner.entries = {}
    return planner


def _scan_entry(path: Path, fqn: str, value: io.IOBase, weights_only: bool) -> None:
    """Name the globals a pickled entry asks for (``unsafe``) before torch.load refuses it; an
    entry's zip is checked as a torch file's is (:mod:`.zipcheck`: compression method, sizes,
    ratio) before anything in it is inflated."""
    start = value.tell()
    raw = value.read()
    value.seek(start)
    what = f"non-tensor entry {fqn!r}"
    if raw[:4] == _ZIP:  # torch.save's zip: its data.pkl (torch.load tells the two apart the same way)
        try:
            layout = zipcheck.check(path, data=raw)
            raw = zipcheck.read(path, layout, "data.pkl")
        except CheckpointError as e:
            raise CheckpointError(path, e.kind, f"{what}: {e.cause}") from None
    try:
        pickle_scan.scan(path, raw, what, allowlist=weights_only)
    except CheckpointError as e:
        if e.kind == "unsafe":
            raise
        # damaged: torch.load below says how


def _storage_error(path: Path, e: BaseException) -> CheckpointError:
    text = str(e).strip().splitlines()
    return CheckpointError(path, "corrupted", f"DCP storage could not be read ({type(e).__name__}: {text[0] if text else ''})")


def _nest(flat: dict[str, Any], planner_data: dict[str, tuple], *, limit: int) -> Any:
    root: dict = {}
    for fqn, value in flat.items():
        keys = planner_data.get(fqn) or (fqn,)
        # a list index is bounded by the entries there are: a damaged one must not allocate
        bad = [k for k in keys if isinstance(k, int) and not 0 <= k < limit]
        if bad:
            raise IndexError(f"planner_data for {fqn!r} has list index {bad[0]} but there are {limit} entries")
        node: Any = root
        for key, nxt in zip(keys[:-1], keys[1:]):
            node = _child(node, key, [] if isinstance(nxt, int) else {})
        _put(node, keys[-1], value)
    return root


def _child(node: Any, key: Any, empty: Any) -> Any:
    if isinstance(node, list):
        while len(node) <= key:
            node.append(None)
        if node[key] is None:
            node[key] = empty
        return node[key]
    return node.setdefault(key, empty)


def _put(node: Any, key: Any, value: Any) -> None:
    if isinstance(node, list):
        while len(node) <= key:
            node.append(None)
    node[key] = value


FORMAT = register(Format("dcp", read=read, verify=verify,
                         find=lambda directory, names: directory if METADATA in names else None))


def _storage_names(names: list[str]) -> list[str]:
    return [n for n in names if n.endswith(".distcp")]


def without_metadata(directory: Path, **_) -> Contents:
    """Refuse (``incomplete``) DCP storage files without ``.metadata``: the coordinator writes it
    last, once every rank's files are written, so a save that did not finish leaves none."""
    files = _storage_names(sorted(p.name for p in directory.iterdir()))
    shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
    raise CheckpointError(
        directory / METADATA, "incomplete",
        f"DCP storage files ({shown}) but no {METADATA}: an interrupted dcp.save (the "
        f"coordinator writes {METADATA} after every rank's files); re-run the save",
    )


UNFINISHED = register(Format(
    "dcp-unfinished", read=without_metadata, verify=lambda path: without_metadata(path),
    find=lambda directory, names: directory if METADATA not in names and _storage_names(names) else None,
))
