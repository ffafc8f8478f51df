"""Corrupt checkpoint files and read them back: every outcome is a correct result or a CheckpointError.

Shared by the fuzz tests and ``benchmarks/detection.py``. A corruption is
``(kind, params)`` applied to a file's bytes; :func:`read_back` runs every
reader on the result under a time limit and an audit hook that records any
attempt to run a program or resolve a pickle global.
"""

from __future__ import annotations

import contextlib
import io
import signal
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st

import pytest_ckpt as pc

#: the writers whose files are corrupted
WRITERS = ("pc.save.pt", "pc.save.safetensors", "torch.save", "torch.save.legacy", "safetensors")
KINDS = ("truncate", "flip", "zero", "trailing")
#: writers whose files store checksums of their data (zip CRCs, pc.save's CRC32): a changed bit
#: must be refused; plain safetensors and legacy torch files carry none
CHECKSUMMED = frozenset({"pc.save.pt", "pc.save.safetensors", "torch.save"})
#: seconds one reader may take on a corrupted file before it counts as a hang
LIMIT = 10

#: audit events that mean code is about to run: a program started, a pickle global resolved
FORBIDDEN = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
             "subprocess.Popen", "pickle.find_class", "builtins.input")


def original() -> dict[str, torch.Tensor]:
    """A small state dict: several dtypes, a 0-dim and an empty tensor, a tie."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "embed.weight": torch.randn(8, 4, generator=g),
        "layers.0.attn.weight": torch.randn(4, 4, generator=g).to(torch.bfloat16),
        "layers.0.norm.bias": torch.randn(4, generator=g).half(),
        "layers.1.attn.weight": torch.randn(4, 4, generator=g),
        "steps": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }
    sd["lm_head.weight"] = sd["embed.weight"]
    return sd


def write(writer: str, sd: dict[str, torch.Tensor], path: Path) -> Path:
    if writer.startswith("pc.save"):
        return pc.save(sd, path.with_suffix("." + writer.rsplit(".", 1)[1]))
    if writer == "safetensors":
        from safetensors.torch import save_file

        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous().clone() for k, v in sd.items()}, str(path))
        return path
    path = path.with_suffix(".pt")
    torch.save(sd, path, _use_new_zipfile_serialization=writer != "torch.save.legacy")
    return path


@dataclass(frozen=True)
class Corruption:
    kind: str
    at: int
    data: tuple[int, ...] = ()  # flip: xor masks at at, at+step, ...; trailing: the bytes; zero: length

    def apply(self, blob: bytes) -> bytes:
        if self.kind == "truncate":
            return blob[:self.at]
        if self.kind == "trailing":
            return blob + bytes(self.data)
        out = bytearray(blob)
        if self.kind == "zero":
            end = min(len(out), self.at + self.data[0])
            out[self.at:end] = bytes(end - self.at)
        else:
            for j, mask in enumerate(self.data):
                k = (self.at + 97 * j) % len(out)
                out[k] ^= mask
        return bytes(out)

    def __repr__(self) -> str:
        return f"Corruption({self.kind!r}, at={self.at}, data={self.data})"


def corruptions(size: int, kinds: tuple[str, ...] = KINDS) -> st.SearchStrategy:
    """Corruptions of a ``size``-byte file: cut at any offset, 1-4 bytes flipped, a zeroed run,
    trailing bytes."""
    at = st.integers(0, size - 1)
    make = {
        "truncate": st.builds(Corruption, st.just("truncate"), at),
        "flip": st.builds(Corruption, st.just("flip"), at,
                          st.lists(st.integers(1, 255), min_size=1, max_size=4).map(tuple)),
        "zero": st.builds(Corruption, st.just("zero"), at, st.tuples(st.integers(1, 64))),
        "trailing": st.builds(Corruption, st.just("trailing"), st.just(size),
                              st.lists(st.integers(0, 255), min_size=1, max_size=64).map(tuple)),
    }
    return st.one_of([make[k] for k in kinds])


class Hang(Exception):
    """A reader ran past :data:`LIMIT` seconds."""


_armed: list[bool] = []
_events: list[str] = []


def _audit(event: str, args: Any) -> None:
    if _armed and event.startswith(FORBIDDEN):
        _events.append(event)


_hooked: list[bool] = []


@contextlib.contextmanager
def _guarded(what: str, *, audit: bool = True):
    """No hang past LIMIT (main thread only: signals), and (``audit``) no forbidden audit event."""
    if not _hooked:
        sys.addaudithook(_audit)  # hooks cannot be removed: one per process, armed on demand
        _hooked.append(True)
    alarm = threading.current_thread() is threading.main_thread()
    if alarm:
        def on_alarm(signum, frame):
            raise Hang(f"{what} ran past {LIMIT}s")
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, LIMIT)
    _events.clear()
    if audit:
        _armed.append(True)
    try:
        yield
    finally:
        _armed.clear()
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    if _events:
        raise AssertionError(f"{what} tried to run code: audit events {sorted(set(_events))}")


def read_back(path: Path, sd: dict[str, torch.Tensor], *, reference: str | None = None) -> dict[str, Any]:
    """Every reader on ``path``: ``{reader: result or CheckpointError}``, and under ``"truth"``
    what torch or safetensors themselves read (a state dict, or the exception they raised);
    ``reference="from_pretrained"``: what transformers loads from a ``save_pretrained`` directory.

    Any other exception propagates (the caller's failure). A ``CheckpointError``
    must name the file.
    """
    readers = {
        "verify": lambda: pc.verify(path),
        "schema": lambda: pc.schema(path),
        "load_state_dict": lambda: pc.load_state_dict(path),
        "diff": lambda: pc.diff(sd, path),
    }
    out: dict[str, Any] = {}
    for name, run in readers.items():
        with _guarded(f"pc.{name}({path.name})"):
            try:
                out[name] = run()
            except pc.CheckpointError as e:
                if path.name not in str(e) and not _names_a_file_inside(path, e):
                    raise AssertionError(f"pc.{name}: CheckpointError does not name the file: {e}")
                out[name] = e
    # the independent readers are the reference, not under test: DCP's own unpickles its metadata
    with _guarded(f"independent read of {path.name}", audit=False):
        out["truth"] = truth(path, sd, reference=reference)
    return out


def _names_a_file_inside(path: Path, e: pc.CheckpointError) -> bool:
    # a directory checkpoint's error names the file at fault inside it
    return path.is_dir() and e.path is not None and Path(e.path).parent == path


def truth(path: Path, sd: dict[str, torch.Tensor], *, reference: str | None = None) -> Any:
    """What the project's own reader reads: ``torch.load`` (weights-only, no mmap: the default),
    ``safetensors.torch.load_file``, an HF index's shards through safetensors, DCP's own reader of
    every key its metadata names, transformers' ``from_pretrained`` (``reference``: the weights it
    loads under the names of ``sd``). The state dict, or the exception it raised."""
    import json
    import warnings

    quiet = io.StringIO()  # DCP's reader prints each rank's traceback before it raises
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            if reference == "from_pretrained":
                return _from_pretrained(path, sd)
            if path.is_dir() and (path / ".metadata").exists():
                # DCP's own reader of every key the metadata names (what dcp_to_torch_save reads)
                from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

                return _load_state_dict_from_keys(checkpoint_id=str(path))
            if path.is_dir():
                from safetensors.torch import load_file

                index = json.loads((path / "model.safetensors.index.json").read_text())
                out = {}
                for shard in sorted(set(index["weight_map"].values())):
                    out.update(load_file(str(path / shard)))
                return out
            if path.suffix == ".safetensors":
                from safetensors import safe_open
                from safetensors.torch import load_file

                out = load_file(str(path))
                with safe_open(str(path), "pt") as f:
                    stored = (f.metadata() or {}).get("pytest_ckpt")
                # pc.save stores a tie group once and lists it in its metadata (a documented JSON)
                for group in json.loads(stored).get("ties", []) if stored else []:
                    for alias in group[1:]:
                        out[alias] = out[group[0]]
                return out
            return torch.load(path, weights_only=True, map_location="cpu")
    except BaseException as e:  # noqa: BLE001 - whatever the independent reader raises is its verdict
        if isinstance(e, (Hang, KeyboardInterrupt)):
            raise
        return e


def _from_pretrained(path: Path, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    loaded = AutoModelForCausalLM.from_pretrained(str(path)).state_dict()
    return {k: loaded[k] for k in sd if k in loaded}


def same(a: Any, b: dict[str, torch.Tensor]) -> bool:
    """``a`` is a state dict with exactly ``b``'s names, shapes, dtypes and bits (a bool as torch
    reads it: any non-zero byte is True)."""
    if not isinstance(a, dict) or a.keys() != b.keys():
        return False
    for k, v in b.items():
        t = a[k]
        if not isinstance(t, torch.Tensor) or t.shape != v.shape or t.dtype != v.dtype:
            return False
        if t.dtype == torch.bool:
            t, v = t.view(torch.uint8).ne(0), v.view(torch.uint8).ne(0)
        if not torch.equal(t.contiguous().reshape(-1).view(torch.uint8), v.contiguous().reshape(-1).view(torch.uint8)):
            return False
    return True


def refused_intact(out: dict[str, Any], expected: dict[str, torch.Tensor]) -> bool:
    """A reader refused a file that the independent reader reads exactly as saved."""
    refused = any(isinstance(out[k], pc.CheckpointError) for k in ("verify", "schema", "load_state_dict", "diff"))
    return refused and same(out["truth"], expected)


#: why a refusal of a file the independent reader reads intact is right, with what shows it
EXPLAINED = {
    "mmap": "torch.load(mmap=True) reads other values than torch.load (compressed tensor data, a "
            "record marked as a directory): which torch reads depends on how it is asked",
    "zip damage": "a damaged zip record that Python's zipfile refuses (a CRC32 that does not match, a local "
                  "header that names another record) or that torch reads as a directory: torch checks neither",
    "bomb": "a record compressed past 32:1 (a decompression bomb); torch.save compresses nothing",
    "pc.save metadata": "pc.save's own record of the file (its schema, its CRC32) changed: torch never reads it",
    "index": "the index names tensors its shards do not hold (or the reverse): the directory disagrees with itself",
    "torn JSON": "a JSON file save_pretrained wrote does not parse (Python's json refuses it): for a torn "
                 "generation_config.json, from_pretrained silently builds generation settings from "
                 "config.json, and the saved ones are lost",
}


def explain(path: Path, pristine: dict[str, bytes], expected: dict[str, torch.Tensor]) -> str | None:
    """Why refusing ``path`` (a file, or a directory of files) is right although the independent
    reader reads it as ``expected``: a key of :data:`EXPLAINED`, from evidence other than
    pytest-ckpt's own reading; ``None`` when nothing explains it (a false alarm). ``pristine``:
    the files as saved."""
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    if path.is_dir() and _index_disagrees(path):
        return "index"
    if path.is_file() and path.read_bytes().startswith(b"PK\x03\x04") and not same(torch_load(path, mmap=True), expected):
        return "mmap"
    for f in files:
        before = pristine.get(f.name)
        blob = f.read_bytes()
        if blob == before:
            continue
        if blob.startswith(b"PK\x03\x04"):
            found = _zip_evidence(blob, before)
            if found:
                return found
        elif f.suffix == ".safetensors" and "pytest_ckpt" in (_metadata(before) or {}) \
                and _metadata(blob) != _metadata(before):
            return "pc.save metadata"
        elif f.suffix == ".json" and not _parses(blob):
            return "torn JSON"
    return None


def _parses(blob: bytes) -> bool:
    import json

    try:
        json.loads(blob)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return True


def torch_load(path: Path, *, mmap: bool = False) -> Any:
    """What ``torch.load`` reads (weights only, with or without ``mmap``), or the exception it raises."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - torch's refusal is its verdict
        return e


def _zip_evidence(blob: bytes, before: bytes | None) -> str | None:
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            infos = zf.infolist()
            for info in infos:
                zf.read(info)  # the CRC and the local header checked
    except Exception:  # noqa: BLE001 - zipfile refusing it, whatever the type, is the evidence
        return "zip damage"
    if any(i.external_attr & 0x10 and i.file_size for i in infos):
        return "zip damage"
    if any(i.compress_type and i.file_size > max(1 << 20, 32 * i.compress_size) for i in infos):
        return "bomb"
    if before is not None:
        with zipfile.ZipFile(io.BytesIO(before)) as zf:
            was = {i.filename: i for i in zf.infolist()}
        for info in infos:
            old = was.get(info.filename)
            if info.filename.endswith("/pytest_ckpt.json") and old is not None and (
                    (info.CRC, info.file_size, info.compress_size, info.compress_type, info.flag_bits,
                     info.external_attr)
                    != (old.CRC, old.file_size, old.compress_size, old.compress_type, old.flag_bits,
                        old.external_attr)):
                return "pc.save metadata"
    return None


def _metadata(blob: bytes | None) -> Any:
    import json

    try:
        (n,) = struct.unpack("<Q", blob[:8])
        return json.loads(blob[8:8 + n]).get("__metadata__")
    except Exception:  # noqa: BLE001 - a header that does not parse has no metadata to compare
        return None


def _index_disagrees(path: Path) -> bool:
    import json

    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    try:
        weight_map = json.loads(index.read_bytes())["weight_map"]
        held = {}
        for shard in set(weight_map.values()):
            with safe_open(str(path / shard), "pt") as f:
                held.update(dict.fromkeys(f.keys(), shard))
    except Exception:  # noqa: BLE001 - an unreadable index or shard is not this evidence
        return False
    return held != weight_map


def judge(corruption: Corruption, out: dict[str, Any], expected: dict[str, torch.Tensor] | None = None,
          *, checksummed: bool = True) -> str | None:
    """``None`` when the outcomes are correct, else what is wrong.

    Judged against ``out["truth"]`` (what torch / safetensors read) and the ``original``
    tensors (``expected``; default :func:`original`): an ok ``diff`` must be a file they read as the original; a ``load_state_dict``
    must return what they return; a ``verify`` pass must be a file they read (and, for
    formats with checksums, read as the original); a ``verify`` refusal must not meet a
    ``diff`` that says all matches; a file they read as the original must not be refused. ``checksummed``: the format stores checksums of its data.
    """
    expected = expected if expected is not None else original()
    failed = {k for k, v in out.items() if k != "truth" and isinstance(v, pc.CheckpointError)}
    theirs = out.get("truth")
    readable = isinstance(theirs, dict)
    as_saved = same(theirs, expected)
    if corruption.kind == "truncate" and "load_state_dict" not in failed:
        return "a truncated file loaded without a CheckpointError"
    if "verify" not in failed:
        if not readable:
            return f"verify passed, but the independent reader refuses the file: {theirs!r:.200}"
        if checksummed and not as_saved:
            return "verify passed, but the file's data changed (the independent reader reads other tensors)"
        if failed & {"load_state_dict", "schema"} and as_saved:  # a false refusal
            return f"verify passed but {sorted(failed)} failed: {[str(out[k]) for k in sorted(failed)]}"
    if "diff" not in failed:
        d = out["diff"]
        if d.ok and not as_saved:
            return f"diff says {str(d).splitlines()[0]!r}, but the independent reader reads " + (
                "other tensors" if readable else f"nothing ({theirs!r:.200})")
        if d.ok and "verify" in failed:
            return f"verify refused ({out['verify']}) but diff says {str(d).splitlines()[0]!r}"
        if not d.ok and as_saved:
            return f"diff reports a difference the independent reader does not see: {str(d).splitlines()[0]}"
        if "load_state_dict" in failed:
            return f"diff read what load_state_dict refused: {out['load_state_dict']}"
    if "load_state_dict" not in failed:
        if not readable:
            return f"load_state_dict read a file the independent reader refuses: {theirs!r:.200}"
        if not same(out["load_state_dict"], theirs):
            return "load_state_dict returned other tensors than the independent reader"
        if "schema" not in failed:
            loaded = {k: (tuple(t.shape), t.dtype) for k, t in out["load_state_dict"].items()}
            declared = {k: (s.shape, s.dtype) for k, s in out["schema"].items()}
            if loaded != declared:
                return f"schema and load disagree: {declared} vs {loaded}"
    return None
