"""The one CRC32: ISA-L's (the ``fast`` extra, in the test extra) and zlib's fallback give zlib's
exact CRC-32, and a real file is judged alike by both."""

from __future__ import annotations

import os
import random
import zlib

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.formats import checksum, zipcheck


def test_the_test_extra_runs_the_fast_crc_and_the_environment_forces_zlib(monkeypatch):
    monkeypatch.delenv(checksum.ENV, raising=False)
    assert checksum.implementation() == "isal"  # python-isal is in the test extra: CI runs it
    monkeypatch.setenv(checksum.ENV, "zlib")
    assert checksum.implementation() == "zlib"


@pytest.mark.parametrize("impl", ["isal", "zlib"])
def test_both_crcs_are_zlibs_exact_crc(impl, monkeypatch):
    if impl == "zlib":
        monkeypatch.setenv(checksum.ENV, "zlib")
    else:
        monkeypatch.delenv(checksum.ENV, raising=False)
    assert checksum.implementation() == impl
    rng = random.Random(0)
    blob = os.urandom(3 << 20)
    view = memoryview(blob)
    # every length up to a few words (the implementations' tails), odd offsets, chunks, a start value
    for n in [*range(0, 70), 255, 4096, 65537, 1 << 20, len(blob)]:
        off = rng.randrange(0, 64)
        piece = view[off:off + n]
        assert checksum.crc32(piece) == zlib.crc32(piece), n
        start = rng.getrandbits(32)
        assert checksum.crc32(piece, start) == zlib.crc32(piece, start), n
    chained = 0
    for i in range(0, len(blob), 999_999):
        chained = checksum.crc32(view[i:i + 999_999], chained)
    assert chained == zlib.crc32(blob) == checksum.crc32(blob, fast=False)


@pytest.mark.parametrize("impl", ["isal", "zlib"])
def test_a_file_is_judged_alike_by_both(impl, tmp_path, monkeypatch):
    if impl == "zlib":
        monkeypatch.setenv(checksum.ENV, "zlib")
    sd = {"w": torch.randn(300, 300), "b": torch.arange(10.0)}
    path = tmp_path / "m.pt"
    torch.save(sd, path)
    pc.verify(path)
    assert pc.diff(sd, path).ok
    span = zipcheck.check(path).find("data/0")
    blob = bytearray(path.read_bytes())
    blob[span.start + 12345] ^= 0x10
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(blob))
    for read in (pc.verify, lambda p: pc.diff(sd, p)):
        with pytest.raises(CheckpointError, match=r"data/0 fails its CRC check"):
            read(bad)
