"""One interface for every file kind: a new format is one registered Format, and every
public call (schema, diff, verify, inspect) reads it without another edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt import formats
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.formats.registry import Contents, Format, detect, register, unregister

MAGIC = b"TOYCKPT1\n"  # 9 bytes: byte 8 is not a safetensors header's "{"


def _read(path: Path, *, meta: bool, weights_only: bool = True) -> Contents:
    spec = json.loads(path.read_bytes()[len(MAGIC):])
    tree = {name: torch.full(shape, 1.0, device="meta" if meta else "cpu") for name, shape in spec.items()}
    return Contents(path, "toy", tree, meta, files=[path])


def _verify(path: Path) -> None:
    try:
        _read(path, meta=True)
    except ValueError as e:
        raise CheckpointError(path, "corrupted", f"not a toy checkpoint ({e})") from None


@pytest.fixture
def toy_format():
    fmt = register(Format("toy", read=_read, verify=_verify, sniff=lambda path, head: head.startswith(MAGIC)))
    try:
        yield fmt
    finally:
        unregister("toy")


def test_a_registered_format_is_read_by_every_public_call(tmp_path, toy_format):
    path = tmp_path / "model.toy"
    path.write_bytes(MAGIC + json.dumps({"w": [2, 3], "layers.0.b": [3]}).encode())
    assert detect(path) == (toy_format, path)
    assert dict(pc.schema(path)) == {"w": pc.TensorSpec((2, 3), torch.float32),
                                     "layers.0.b": pc.TensorSpec((3,), torch.float32)}
    assert pc.diff({"w": torch.ones(2, 3), "layers.0.b": torch.ones(3)}, path).ok
    pc.verify(path)
    assert pc.inspect(path).format == "toy"
    path.write_bytes(MAGIC + b"{")
    with pytest.raises(CheckpointError, match="not a toy checkpoint"):
        pc.verify(path)


def test_without_it_the_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.toy"
    path.write_bytes(MAGIC + b"{}")
    with pytest.raises(CheckpointError) as info:
        pc.schema(path)
    assert info.value.kind == "not-a-checkpoint"


def test_every_reader_returns_contents(tmp_path):
    # one shape of result for every built-in format, whatever it reads
    state = {"a": torch.zeros(2), "b": torch.ones(3)}
    torch.save(state, tmp_path / "m.pt")
    pc.save(state, tmp_path / "m.safetensors")
    pc.save_schema(state, tmp_path / "m.json")
    for name in ("m.pt", "m.safetensors", "m.json"):
        c = formats.read(tmp_path / name, meta=True)
        assert isinstance(c, Contents) and set(c.tree) == {"a", "b"}, name
    assert [f for f in formats.formats()][:3] == ["torch", "torch-legacy", "safetensors"]
