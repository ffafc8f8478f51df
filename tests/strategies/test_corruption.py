"""Corruption fuzzing: truncation at any offset, byte flips, zeroed runs, trailing bytes.

Every case gives a correct result or a ``CheckpointError`` naming the file:
never another exception, never a hang, never code run.
"""

import functools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import corruption


@functools.lru_cache(maxsize=None)
def _pristine(writer: str) -> tuple[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = corruption.write(writer, corruption.original(), Path(tmp) / "ckpt")
        return path.suffix, path.read_bytes()


@pytest.mark.parametrize("writer", corruption.WRITERS)
@given(data=st.data())
def test_corrupted_files_give_a_result_or_a_checkpoint_error(writer, data):
    suffix, blob = _pristine(writer)
    c = data.draw(corruption.corruptions(len(blob)), label="corruption")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ckpt{suffix}"
        path.write_bytes(c.apply(blob))
        sd = corruption.original()
        problem = corruption.judge(c, corruption.read_back(path, sd), sd,
                                   checksummed=writer in corruption.CHECKSUMMED)
    assert problem is None, problem


@pytest.mark.parametrize("writer", corruption.WRITERS)
def test_pristine_files_read_back_exactly(writer):
    suffix, blob = _pristine(writer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ckpt{suffix}"
        path.write_bytes(blob)
        out = corruption.read_back(path, corruption.original())
    assert out["verify"] is None and out["diff"].ok, str(out["diff"])
    # the independent reader (torch / safetensors) reads the original too: the judge's reference
    assert corruption.same(out["truth"], corruption.original())
    unchanged = corruption.Corruption("trailing", len(blob), ())
    assert corruption.judge(unchanged, out, checksummed=writer in corruption.CHECKSUMMED) is None


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _RunsCode()}, path)
    # read_back fails the test if any reader starts a program or resolves a global
    out = corruption.read_back(path, {"w": torch.zeros(1)})
    assert out["load_state_dict"].kind == "unsafe" and "os" in str(out["load_state_dict"])
