"""pytest-ckpt's own files (formats/own.py): the one home of every read that unpickles in full, and
the fresh process's trace read weights only; nothing outside formats/ unpickles what a project wrote."""

from __future__ import annotations

import enum
import os
import pickle
import random
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch

import pytest_ckpt
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.formats import own
from pytest_ckpt.resume.capture import Unreadable
from pytest_ckpt.resume.runner import Trace

PACKAGE = Path(pytest_ckpt.__file__).parent
#: the repository's before-stop hook (shared/hooks/before-stop) greps the package with this
UNSAFE = re.compile(r"weights_only *= *False|pickle\.loads?\(|read_metadata\(")


class Phase(enum.Enum):
    WARMUP = 1


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def outside_formats() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if PACKAGE / "formats" not in p.parents]


def test_nothing_outside_formats_unpickles_freely():
    found = [f"{p.relative_to(PACKAGE)}:{n}: {line.strip()}" for p in outside_formats()
             for n, line in enumerate(p.read_text().splitlines(), start=1) if UNSAFE.search(line)]
    assert not found, found


def test_nothing_outside_formats_calls_torch_load():
    # in code, not in the messages that tell a user how to load a file
    found = []
    for path in (p for p in outside_formats() if "torch.load" in p.read_text()):
        with open(path, "rb") as f:
            code = [t for t in tokenize.tokenize(f.readline) if t.type in (tokenize.NAME, tokenize.OP)]
        for a, b, c, d in zip(code, code[1:], code[2:], code[3:]):
            if (a.string, b.string, c.string, d.string) == ("torch", ".", "load", "("):
                found.append(f"{path.relative_to(PACKAGE)}:{a.start[0]}")
    assert not found, found


def test_the_fresh_process_trace_comes_back_whole_read_weights_only(tmp_path):
    np_state = np.random.RandomState(0).get_state()
    trace = Trace(losses=[0.5, float("nan")], batches=["ab12", None],
                  prints=[{"x": ("tensor", (2,), "torch.float32", "f00d")}],
                  snapshots={3: {"model": {"w": torch.arange(4.0), "m": torch.empty(2, device="meta")},
                                 "phase": Phase.WARMUP, "numpy": np_state, "python": random.getstate(),
                                 "dtype": torch.bfloat16, "where": torch.device("cpu"), "z": 1 + 2j,
                                 "broken": Unreadable("RuntimeError: no state_dict")}},
                  trained=frozenset({"model"}), drawn={"torch"}, started=frozenset({"model", "step"}))
    path = tmp_path / "trace.pt"
    torch.save(vars(trace), path)  # as the child writes it

    back = Trace(**own.read_torch(path, allow=[Unreadable]))
    snap = back.snapshots[3]
    assert torch.equal(snap["model"]["w"], torch.arange(4.0)) and snap["model"]["m"].is_meta
    assert snap["phase"] is Phase.WARMUP and type(snap["broken"]) is Unreadable
    assert np.array_equal(snap["numpy"][1], np_state[1]) and snap["python"] == random.getstate()
    assert (snap["dtype"], snap["where"], snap["z"]) == (torch.bfloat16, torch.device("cpu"), 1 + 2j)
    assert back.trained == frozenset({"model"}) and back.drawn == {"torch"} and back.batches == ["ab12", None]


def test_a_payload_in_a_trace_is_refused_and_runs_nothing(tmp_path):
    pwned = tmp_path / "pwned"
    path = tmp_path / "trace.pt"
    torch.save({"losses": [0.5], "prints": [Payload(pwned)]}, path)
    with pytest.raises(CheckpointError) as info:
        own.read_torch(path, allow=[Unreadable])
    assert info.value.kind == "unsafe" and "os.system" in str(info.value) and "trace.pt" in str(info.value)
    assert not pwned.exists()


def test_a_job_is_read_back_in_the_order_it_was_written(tmp_path):
    path = tmp_path / "job.pkl"
    with open(path, "wb") as f:  # as processes.ranks.run_ranks writes it: sys.path first
        pickle.dump(["/project"], f)
        pickle.dump({"config": pickle.dumps(Phase.WARMUP)}, f)
    first, job = own.pickles(path)
    assert first == ["/project"] and own.unpickled(job["config"]) is Phase.WARMUP
