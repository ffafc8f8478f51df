"""Corrupt checkpoint files and read them back: every outcome is a correct result or a CheckpointError.

Shared by the fuzz tests and ``benchmarks/detection.py``. A corruption is
``(kind, params)`` applied to a file's bytes; :func:`read_back` runs every
reader on the result under a time limit and an audit hook that records any
attempt to run a program or resolve a pickle global.
"""

from __future__ import annotations

import contextlib
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
def _guarded(what: str):
    """No hang past LIMIT (main thread only: signals), and no forbidden audit event."""
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
    """Every reader on ``path``: ``{reader: result or CheckpointError}``.

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
                if path.name not in str(e):
                    raise AssertionError(f"pc.{name}: CheckpointError does not name the file: {e}")
                out[name] = e
    return out


def judge(corruption: Corruption, out: dict[str, Any]) -> str | None:
    """``None`` when the outcomes are consistent and correct, else what is wrong."""
    failed = {k for k, v in out.items() if isinstance(v, pc.CheckpointError)}
    if corruption.kind == "truncate" and "load_state_dict" not in failed:
        return "a truncated file loaded without a CheckpointError"
    if "verify" not in failed and failed & {"load_state_dict", "schema"}:
        return f"verify passed but {sorted(failed)} failed: {[str(out[k]) for k in sorted(failed)]}"
    if not failed & {"schema", "load_state_dict"}:
        loaded = {k: (tuple(t.shape), t.dtype) for k, t in out["load_state_dict"].items()}
        declared = {k: (s.shape, s.dtype) for k, s in out["schema"].items()}
        if loaded != declared:
            return f"schema and load disagree: {declared} vs {loaded}"
    if "diff" not in failed and "load_state_dict" in failed:
        return f"diff read what load_state_dict refused: {out['load_state_dict']}"
    return None
