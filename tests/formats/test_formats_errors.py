"""Damaged input always ends in a CheckpointError naming the file: never a bare torch/zip/pickle error."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import safetensors.torch
import torch

from pytest_ckpt import formats
from pytest_ckpt.errors import CheckpointError

FILES = ["torch_zip", "torch_legacy", "safetensors_file"]


def _raises(call, path, kinds):
    with pytest.raises(CheckpointError) as info:
        call()
    err = info.value
    assert err.kind in kinds, str(err)
    assert path.name in str(err)
    assert "Traceback" not in str(err)
    return err


def _cut(src, dst, n):
    dst.write_bytes(src.read_bytes()[:n])
    return dst


@pytest.mark.parametrize("fixture", FILES)
@pytest.mark.parametrize("where", ["0", "8", "100", "middle", "size-1"])
def test_truncation(request, tmp_path, fixture, where):
    src = request.getfixturevalue(fixture)
    size = src.stat().st_size
    n = {"0": 0, "8": 8, "100": 100, "middle": size // 2, "size-1": size - 1}[where]
    path = _cut(src, tmp_path / f"cut{src.suffix}", n)
    for meta in (True, False):
        _raises(lambda: formats.read(path, meta=meta), path, {"truncated"})
    _raises(lambda: formats.verify(path), path, {"truncated"})


def test_empty_file_says_so(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    err = _raises(lambda: formats.read(path, meta=True), path, {"truncated"})
    assert "empty" in err.cause


def test_truncated_zip_names_the_central_directory(tmp_path, torch_zip):
    path = _cut(torch_zip, tmp_path / "half.pt", torch_zip.stat().st_size // 2)
    err = _raises(lambda: formats.read(path, meta=True), path, {"truncated"})
    assert "central directory" in err.cause and str(path.stat().st_size) in err.cause


def test_truncated_safetensors_says_how_much_is_missing(tmp_path, safetensors_file):
    size = safetensors_file.stat().st_size
    path = _cut(safetensors_file, tmp_path / "short.safetensors", size - 10)
    err = _raises(lambda: formats.read(path, meta=True), path, {"truncated"})
    assert "bytes of data but the file has" in err.cause


@pytest.mark.parametrize("fixture", FILES)
def test_random_bit_flips_read_or_raise(request, tmp_path, fixture):
    src = request.getfixturevalue(fixture)
    original = src.read_bytes()
    rng = random.Random(1234)
    for case in range(60):
        data = bytearray(original)
        for _ in range(rng.choice([1, 1, 2, 8])):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{case}{src.suffix}"
        path.write_bytes(bytes(data))
        for call in (lambda: formats.read(path, meta=True), lambda: formats.read(path, meta=False),
                     lambda: formats.verify(path)):
            try:
                call()
            except CheckpointError as e:
                assert path.name in str(e)
            # any other exception type fails the test


def test_not_a_checkpoint_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a checkpoint\n" * 10)
    err = _raises(lambda: formats.read(path, meta=True), path, {"not-a-checkpoint"})
    assert "safetensors" in err.cause


def test_random_bytes_file(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(random.Random(0).randbytes(4096))
    _raises(lambda: formats.read(path, meta=True), path, {"not-a-checkpoint", "corrupted"})


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere.pt"
    _raises(lambda: formats.read(path, meta=True), path, {"not-found"})
    _raises(lambda: formats.verify(path), path, {"not-found"})


def test_directory_without_index_lists_what_was_looked_for(tmp_path):
    d = tmp_path / "stuff"
    d.mkdir()
    (d / "readme.md").write_text("hi")
    err = _raises(lambda: formats.read(d, meta=True), d, {"not-a-checkpoint"})
    assert "index.json" in err.cause and ".metadata" in err.cause


def test_directory_with_two_checkpoints_is_ambiguous(tmp_path, torch_zip):
    d = tmp_path / "two"
    d.mkdir()
    shutil.copy(torch_zip, d / "a.pt")
    shutil.copy(torch_zip, d / "b.pt")
    err = _raises(lambda: formats.read(d, meta=True), d, {"not-a-checkpoint"})
    assert "a.pt" in err.cause


def test_safetensors_header_not_json(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((20).to_bytes(8, "little") + b"{not json at all....}" + b"\0" * 10)
    _raises(lambda: formats.read(path, meta=True), path, {"corrupted"})


def test_safetensors_trailing_bytes_fail_verify_and_every_read(tmp_path, safetensors_file):
    path = tmp_path / "long.safetensors"
    path.write_bytes(safetensors_file.read_bytes() + b"extra")
    with pytest.raises(Exception, match="not fully covered"):  # the safetensors library refuses it
        safetensors.torch.load_file(str(path))
    for check in (lambda: formats.verify(path), lambda: formats.read(path, meta=False)):
        err = _raises(check, path, {"corrupted"})
        assert "trailing" in err.cause


def test_torch_zip_crc_failure_in_verify(tmp_path, state):
    path = tmp_path / "flip.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    data = bytearray(path.read_bytes())
    i = data.find(b"\0" * 256, 200)  # inside the tensor bytes
    data[i + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    formats.read(path, meta=True)  # metadata is intact
    err = _raises(lambda: formats.verify(path), path, {"corrupted"})
    assert "CRC" in err.cause


def test_dcp_missing_and_short_storage(tmp_path, dcp_dir):
    storage = next(dcp_dir.glob("*.distcp"))
    data = storage.read_bytes()
    storage.write_bytes(data[: len(data) // 2])
    for call in (lambda: formats.verify(dcp_dir), lambda: formats.read(dcp_dir, meta=True)):
        _raises(call, storage, {"incomplete"})
    storage.unlink()
    _raises(lambda: formats.verify(dcp_dir), storage, {"incomplete"})


def test_dcp_truncated_metadata(tmp_path, dcp_dir):
    md = dcp_dir / ".metadata"
    md.write_bytes(md.read_bytes()[:50])
    _raises(lambda: formats.read(dcp_dir, meta=True), md, {"truncated", "corrupted"})


def test_hf_index_damaged(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "model.safetensors.index.json").write_text("{\"weight_map\": ")
    _raises(lambda: formats.read(d, meta=True), d / "model.safetensors.index.json", {"corrupted"})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    _raises(lambda: formats.verify(d), d / "model.safetensors.index.json", {"corrupted"})


def test_dcp_bit_flips_read_or_raise(tmp_path, dcp_dir):
    rng = random.Random(7)
    for case in range(40):
        d = tmp_path / f"flip{case}"
        shutil.copytree(dcp_dir, d)
        target = d / rng.choice([".metadata", next(dcp_dir.glob("*.distcp")).name])
        data = bytearray(target.read_bytes())
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
        for call in (lambda: formats.read(d, meta=True), lambda: formats.read(d, meta=False),
                     lambda: formats.verify(d)):
            try:
                call()
            except CheckpointError as e:
                assert d.name in str(e)
