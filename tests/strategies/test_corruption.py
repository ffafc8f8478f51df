"""Corruption fuzzing: truncation at any offset, byte flips, zeroed runs, trailing bytes.

Every case gives a correct result or a ``CheckpointError`` naming the file:
never another exception, never a hang, never code run.
"""

import functools
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pytest_ckpt as pc
from tests.strategies import corruption, zipfields


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
        out = corruption.read_back(path, sd)
        problem = corruption.judge(c, out, sd, checksummed=writer in corruption.CHECKSUMMED)
        # a refusal of a file torch reads as saved is a false alarm, unless other evidence explains it
        if problem is None and corruption.refused_intact(out, sd) and not corruption.explain(path, {path.name: blob}, sd):
            problem = f"{c!r}: refused ({out['load_state_dict']}), yet torch reads it as saved"
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


def test_a_refusal_of_a_file_torch_reads_as_saved_is_a_false_alarm_unless_explained(tmp_path):
    # a reader that refuses everything no longer scores 100%: the judge's own evidence decides
    sd = corruption.original()
    suffix, blob = _pristine("torch.save")
    path = tmp_path / f"ckpt{suffix}"
    path.write_bytes(blob)
    out = corruption.read_back(path, sd)
    out["load_state_dict"] = out["verify"] = pc.CheckpointError(path, "corrupted", "refuses everything")
    assert corruption.refused_intact(out, sd)
    assert corruption.explain(path, {path.name: blob}, sd) is None  # nothing changed: a false alarm
    # a flipped CRC32 in the directory: torch reads the file as saved, zipfile refuses it
    crc = zipfields.field(blob, f"central {zipfile.ZipFile(path).namelist()[0]}", "crc")
    path.write_bytes(crc.set(blob, crc.get(blob) ^ 1))
    out = corruption.read_back(path, sd)
    assert corruption.refused_intact(out, sd) and "CRC" in str(out["verify"])
    assert corruption.explain(path, {path.name: blob}, sd) == "zip damage"
