"""write(): atomic, stored metadata beside the weights, ties kept in both formats; verify() checks it all."""

from __future__ import annotations

import json
import os
import struct
import zipfile

import pytest
import torch

from pytest_ckpt import formats
from pytest_ckpt.checkpoint.ties import storage_key, tie_groups
from pytest_ckpt.checkpoint.schema import Schema
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.formats.stored import config_hash

SUFFIXES = [".pt", ".safetensors"]


def _stored(tensors, config=None):
    config = config or {"hidden": 4, "layers": 1}
    return {"format_version": 1, "schema": Schema.of(tensors).to_dict(), "config": config,
            "config_hash": config_hash(config)}


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_with_ties_and_stored(tmp_path, state, suffix, same):
    path = formats.write(state, tmp_path / f"out{suffix}", stored=_stored(state), ties=tie_groups(state))
    assert path == tmp_path / f"out{suffix}"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    formats.verify(path)
    for meta in (True, False):
        c = formats.read(path, meta=meta)
        assert c.stored["config"] == {"hidden": 4, "layers": 1}
        assert c.stored["ties"] == [["embed.weight", "lm_head.weight"]]
        assert c.ties_expressible
        key = c.tie_key or storage_key
        assert key(c.tree["embed.weight"]) == key(c.tree["lm_head.weight"]) is not None
        if not meta:
            same(state, c.tree)
            if suffix == ".safetensors":
                assert c.tree["embed.weight"] is c.tree["lm_head.weight"]


def test_safetensors_output_loads_with_the_safetensors_library(tmp_path, state):
    from safetensors import safe_open

    path = formats.write(state, tmp_path / "m.safetensors", stored={"format_version": 1}, ties=tie_groups(state))
    with safe_open(str(path), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # written once, under the first name
        assert torch.equal(f.get_tensor("embed.weight"), state["embed.weight"])
        assert json.loads(f.metadata()["pytest_ckpt"])["ties"] == [["embed.weight", "lm_head.weight"]]


def test_torch_output_loads_with_plain_torch_load(tmp_path, state):
    path = formats.write(state, tmp_path / "m.pt", stored={"format_version": 1}, ties=tie_groups(state))
    loaded = torch.load(path, weights_only=True)
    assert loaded["embed.weight"].data_ptr() == loaded["lm_head.weight"].data_ptr()
    with zipfile.ZipFile(path) as zf:
        assert any(n.endswith("/pytest_ckpt.json") for n in zf.namelist())


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_non_contiguous_and_parameters(tmp_path, suffix):
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {"t": base.t(), "p": torch.nn.Parameter(torch.ones(2)), "s": base[:, 1]}
    path = formats.write(tensors, tmp_path / f"nc{suffix}", stored={})
    got = formats.read(path, meta=False).tree
    for k, v in tensors.items():
        assert torch.equal(got[k], v.detach())


def test_failed_write_leaves_the_old_file(tmp_path, state):
    path = formats.write(state, tmp_path / "m.safetensors", stored={})
    before = path.read_bytes()
    with pytest.raises(Exception):
        formats.write({"x": torch.zeros(2, device="meta")}, path, stored={})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def _rewrite_safetensors_metadata(path, edit):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_verify_safetensors_data_crc(tmp_path, state):
    path = formats.write(state, tmp_path / "m.safetensors", stored={})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        formats.verify(path)
    assert info.value.kind == "corrupted" and "CRC32" in info.value.cause and "m.safetensors" in str(info.value)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_verify_config_hash_mismatch(tmp_path, state, suffix):
    stored = _stored(state)
    stored["config_hash"] = config_hash({"hidden": 5})
    path = formats.write(state, tmp_path / f"m{suffix}", stored=stored)
    with pytest.raises(CheckpointError) as info:
        formats.verify(path)
    assert info.value.kind == "corrupted" and "config hash" in info.value.cause


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_verify_schema_mismatch(tmp_path, state, suffix):
    stored = _stored(state)
    stored["schema"]["embed.weight"]["shape"] = [9, 9]
    stored["schema"]["ghost"] = {"shape": [1], "dtype": "float32"}
    path = formats.write(state, tmp_path / f"m{suffix}", stored=stored)
    with pytest.raises(CheckpointError) as info:
        formats.verify(path)
    assert info.value.kind == "corrupted" and "ghost" in info.value.cause and "embed.weight" in info.value.cause


def test_verify_safetensors_overlap_and_gap(tmp_path):
    path = formats.write({"a": torch.zeros(4), "b": torch.ones(4)}, tmp_path / "m.safetensors", stored={})

    def overlap(h):
        h["b"]["data_offsets"] = [8, 24]
    _rewrite_safetensors_metadata(path, overlap)
    with pytest.raises(CheckpointError) as info:
        formats.verify(path)
    assert info.value.kind == "corrupted"


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 64


def test_storage_key_real_tensors():
    w = torch.randn(3, 3)
    key = storage_key
    assert key(w) == key(w.view(3, 3))
    assert key(w) != key(w.t()) and key(w) != key(w[1:])
    assert key(torch.empty(0)) is None
    assert key(torch.empty(3, device="meta")) is None
    assert tie_groups({"a": w, "b": w, "c": w.clone()}) == [("a", "b")]


def test_atomic_write_uses_rename(tmp_path, state, monkeypatch):
    calls = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((a, b)), real(a, b))[1])
    formats.write(state, tmp_path / "m.pt", stored={})
    assert len(calls) == 1 and str(calls[0][1]).endswith("m.pt")
