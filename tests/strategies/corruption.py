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


def read_back(path: Path, sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Every reader on ``path``: ``{reader: result or CheckpointError}``, and under ``"truth"``
    what torch or safetensors themselves read (a state dict, or the exception they raised).

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
        out["truth"] = truth(path, sd)
    return out


def _names_a_file_inside(path: Path, e: pc.CheckpointError) -> bool:
    # a directory checkpoint's error names the file at fault inside it
    return path.is_dir() and e.path is not None and Path(e.path).parent == path


def truth(path: Path, sd: dict[str, torch.Tensor]) -> Any:
    """What the project's own reader reads: ``torch.load`` (weights-only, no mmap: the default),
    ``safetensors.torch.load_file``, an HF index's shards through safetensors, DCP's own reader of
    every key its metadata names. The state dict, or the exception it raised."""
    import json
    import warnings

    quiet = io.StringIO()  # DCP's reader prints each rank's traceback before it raises
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
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


def same(a: Any, b: dict[str, torch.Tensor]) -> bool:
    """``a`` is a state dict with exactly ``b``'s names, shapes, dtypes and bits."""
    if not isinstance(a, dict) or a.keys() != b.keys():
        return False
    for k, v in b.items():
        t = a[k]
        if not isinstance(t, torch.Tensor) or t.shape != v.shape or t.dtype != v.dtype:
            return False
        if not torch.equal(t.contiguous().reshape(-1).view(torch.uint8), v.contiguous().reshape(-1).view(torch.uint8)):
            return False
    return True


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
