"""A torch zip read as torch reads it (miniz: the central directory first, the local header it
points at), on real files from torch.save and pc.save with one field changed on purpose: what torch
reads differently or refuses is refused, naming the record; what torch reads intact is read."""

from __future__ import annotations

import random
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.errors import CheckpointError
from tests.strategies import corruption, zipfields
from tests.strategies.corruption import torch_load

SD = {"a": torch.arange(8.0), "b": torch.arange(4.0) + 100, "c": torch.ones(3, dtype=torch.float16)}
READERS = {"verify": pc.verify, "schema": pc.schema, "load_state_dict": pc.load_state_dict,
           "diff": lambda p: pc.diff(SD, p)}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zips")
    torch.save(SD, root / "torch.pt")
    pc.save(SD, root / "pc.pt")
    return root


def intact(loaded) -> bool:
    return isinstance(loaded, dict) and loaded.keys() == SD.keys() and all(
        torch.equal(loaded[k], SD[k]) for k in SD)


def every_reader_refuses(path: Path, match: str, *, values_only: bool = False) -> None:
    """Every reader refuses ``path``; ``values_only``: every reader of values (the damage is
    in bytes a schema does not read)."""
    for name, read in READERS.items():
        if values_only and name == "schema":
            continue
        with pytest.raises(CheckpointError) as info:
            read(path)
        assert info.value.kind == "corrupted" and match in str(info.value), f"{name}: {info.value}"


def changed(src: Path, dst: Path, where: str, name: str, value=None, xor: int | None = None) -> Path:
    """A copy of ``src`` with one zip field set to ``value`` (or xor'ed with ``xor``)."""
    blob = src.read_bytes()
    f = zipfields.field(blob, where, name)
    dst.write_bytes(f.set(blob, value if xor is None else f.get(blob) ^ xor))
    return dst


def folder(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()[0].split("/")[0]


@pytest.mark.parametrize("name", ["torch.pt", "pc.pt"])
def test_a_storage_record_marked_as_a_directory_is_refused(files, tmp_path, name):
    record = f"{folder(files / name)}/data/1"
    path = changed(files / name, tmp_path / name, f"central {record}", "external attributes", 0x10)
    assert intact(torch_load(path, mmap=True))  # the mmap reader looks away...
    assert not intact(torch_load(path))  # ...torch.load does not read the bytes of a "directory"
    every_reader_refuses(path, f"zip record {record} is marked as a directory")


@pytest.mark.parametrize("name", ["torch.pt", "pc.pt"])
def test_the_encrypted_flag_on_a_later_storage_record_is_refused(files, tmp_path, name):
    record = f"{folder(files / name)}/data/1"  # not the first: torch's meta read never stats it
    path = changed(files / name, tmp_path / name, f"central {record}", "flags", xor=0x01)
    assert isinstance(torch_load(path), RuntimeError) and isinstance(torch_load(path, mmap=True), RuntimeError)
    every_reader_refuses(path, f"zip record {record} is marked encrypted")


def test_seeded_flips_in_a_pc_save_directory_are_read_as_torch_reads_them(files, tmp_path):
    """Flips in the central directory entries of a storage record, data.pkl and pc.save's own
    record: where torch (with or without mmap) reads other values or refuses, every reader
    refuses; where it reads the file intact, we read it too, unless other evidence explains the
    refusal (zipfile refuses it, the flip changed pc.save's own record)."""
    blob = (files / "pc.pt").read_bytes()
    top = folder(files / "pc.pt")
    entries = {f"central {top}/{r}" for r in ("data/1", "data.pkl", "pytest_ckpt.json")}
    targets = [f for f in zipfields.fields(blob) if f.where in entries]
    rng = random.Random(22)
    path = tmp_path / "flip.pt"
    refused_for_torch = 0
    for f in targets:
        for mask in (0x10, 0x81, rng.randrange(1, 256)):
            damaged = bytearray(blob)
            damaged[f.at + rng.randrange(f.width)] ^= mask
            path.write_bytes(bytes(damaged))
            theirs, mapped = torch_load(path), torch_load(path, mmap=True)
            try:
                ours = pc.load_state_dict(path)
            except CheckpointError as e:
                if not (intact(theirs) and intact(mapped)):
                    refused_for_torch += 1
                    continue
                why = corruption.explain(path, {path.name: blob}, SD)
                assert why, f"{f} ^ {mask:#x}: torch reads it as saved, and nothing explains the refusal: {e}"
                continue
            assert intact(theirs) and intact(mapped), f"{f} ^ {mask:#x}: we read what torch reads otherwise"
            assert all(torch.equal(ours[k], SD[k]) for k in SD)
            pc.verify(path)
    assert refused_for_torch > 10  # the flips reached what torch reads


#: (structure, field, change, what the refusal says): each a field torch (miniz) honours
FIELDS = [
    ("central {r}", "flags", lambda v: v ^ 0x20, "is marked as patch data (flag bit 5)"),
    ("central {r}", "flags", lambda v: v ^ 0x40, "is marked encrypted"),
    ("central {r}", "flags", lambda v: v ^ 0x2000, "is marked encrypted (flag bit 13)"),
    ("central {r}", "method", lambda v: 12, "is compressed with method 12, which torch cannot read"),
    ("central {r}", "disk", lambda v: 3, "places it on disk 3"),
    ("central {r}", "size", lambda v: v ^ 1, "cannot both be right"),
    ("central {r}", "compressed size", lambda v: 1 << 31, "cannot both be right"),
    ("central {r}", "header offset", lambda v: v + (1 << 20), "past the end of the file"),
    ("central {r}", "header offset", lambda v: v + 1, "no local header at offset"),
    ("local {r}", "extra length", lambda v: v + 4096, "past the end of the records"),
    ("central {r}", "name length", lambda v: v - 1, "the zip directory is damaged"),
    ("zip64 end", "entries here", lambda v: v + 1, "multi-disk archive"),
    ("zip64 end", "disk", lambda v: 2, "multi-disk archive (9 of 9 entries on disk 2"),
    ("zip64 end", "directory size", lambda v: 1 << 40, "its zip64 end record claims 9 entries in"),
    ("zip64 end", "directory size", lambda v: v + 1 << 20, "do not fit in the file"),
    ("locator", "disks", lambda v: 2, "counts 2 disks"),
    ("locator", "zip64 end offset", lambda v: 1 << 40, "past the end of the file"),
]


@pytest.mark.parametrize("where, name, change, says", FIELDS, ids=[f"{w.split()[0]} {n}" for w, n, _, _ in FIELDS])
def test_each_directory_field_torch_honours_is_refused_naming_what_it_says(files, tmp_path, where, name, change, says):
    top = folder(files / "torch.pt")
    blob = (files / "torch.pt").read_bytes()
    f = zipfields.field(blob, where.format(r=f"{top}/data/1"), name)
    path = tmp_path / "field.pt"
    path.write_bytes(f.set(blob, change(f.get(blob))))
    assert not (intact(torch_load(path)) and intact(torch_load(path, mmap=True))), "torch reads it: no finding"
    every_reader_refuses(path, says)


@pytest.mark.parametrize("record, at, byte, says", [
    ("data/1", 0, ord("u"), "lies outside the archive's folder torch/"),
    ("data/1", 10, 0xFF, "is not UTF-8"),
    ("data.pkl", 5, ord("x"), "is not inside a folder"),  # the first record: its folder is the archive's
], ids=["outside", "not-utf8", "no-folder"])
def test_a_record_name_torch_cannot_list_is_refused(files, tmp_path, record, at, byte, says):
    top = folder(files / "torch.pt")
    assert top == "torch"
    blob = (files / "torch.pt").read_bytes()
    name = zipfields.field(blob, f"central {top}/{record}", "header offset").at + 4  # its name's first byte
    damaged = bytearray(blob)
    damaged[name + at] = byte
    path = tmp_path / "name.pt"
    path.write_bytes(bytes(damaged))
    assert isinstance(torch_load(path), Exception)  # torch.load lists every record, and refuses
    every_reader_refuses(path, says)


def test_the_end_record_is_the_last_one_as_miniz_finds_it(files, tmp_path):
    # an end record in the archive's comment: miniz takes the last signature with a whole record after
    # it, so torch reads an archive of no records; the first one found would read the real directory
    path = tmp_path / "comment.pt"
    with zipfile.ZipFile(files / "torch.pt") as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.comment = b"PK\x05\x06" + bytes(18)
    assert isinstance(torch_load(path), RuntimeError) and isinstance(torch_load(path, mmap=True), RuntimeError)
    every_reader_refuses(path, "the zip archive holds no records")


def test_a_stored_record_whose_two_sizes_disagree_is_refused(files, tmp_path):
    # miniz checks the two sizes only when the time field is 0 (it reads method and time as one
    # word); another zip tool writes a time, and then torch.load and its mmap read differently
    path = tmp_path / "timed.pt"
    with zipfile.ZipFile(files / "torch.pt") as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(2024, 5, 6, 7, 8, 10)), zin.read(info))
    record = f"{folder(path)}/data/0"
    path = changed(path, tmp_path / "sizes.pt", f"central {record}", "size", 40)
    assert isinstance(torch_load(path), RuntimeError) and intact(torch_load(path, mmap=True))
    every_reader_refuses(path, f"zip record {record} is stored, but its directory entry gives 32 and 40 bytes")


def test_records_that_overlap_are_refused(files, tmp_path):
    record = f"{folder(files / 'torch.pt')}/data/0"
    blob = (files / "torch.pt").read_bytes()
    for where in ("central", "local"):
        for name in ("compressed size", "size"):
            f = zipfields.field(blob, f"{where} {record}", name)
            blob = f.set(blob, f.get(blob) + 128 if where == "central" else f.get(blob))
    path = tmp_path / "overlap.pt"
    path.write_bytes(blob)
    every_reader_refuses(path, f"zip records {record} and")


def test_a_local_header_naming_another_record_is_refused(files, tmp_path):
    record = f"{folder(files / 'torch.pt')}/data/1"
    blob = (files / "torch.pt").read_bytes()
    name_at = zipfields.field(blob, f"local {record}", "extra length").at + 2
    damaged = bytearray(blob)
    damaged[name_at + len(record) - 1] = ord("2")  # the local header says data/2
    path = tmp_path / "local.pt"
    path.write_bytes(bytes(damaged))
    assert intact(torch_load(path))  # torch never reads the local name; zipfile does
    every_reader_refuses(path, f"zip record {record}: its local header names")


def test_a_local_extra_length_that_moves_the_data_is_refused(files, tmp_path):
    record = f"{folder(files / 'torch.pt')}/data/0"
    path = changed(files / "torch.pt", tmp_path / "x.pt", f"local {record}", "extra length", xor=0x04)
    assert not intact(torch_load(path))  # torch reads the tensor 4 bytes later
    every_reader_refuses(path, f"zip record {record} fails its CRC check", values_only=True)


def rezip(src: Path, dst: Path, *, rename=lambda n: n, data=lambda n, d: d, deflate=()) -> Path:
    """``src`` rewritten by Python's zipfile: records renamed, their bytes changed, some deflated."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            short = info.filename.split("/", 1)[1]
            method = zipfile.ZIP_DEFLATED if short in deflate else zipfile.ZIP_STORED
            zout.writestr(zipfile.ZipInfo(rename(info.filename)), data(short, zin.read(info)), compress_type=method)
    return dst


def test_names_are_found_as_torch_finds_them_ignoring_letter_case(files, tmp_path):
    path = rezip(files / "torch.pt", tmp_path / "case.pt", rename=lambda n: n.replace("/data/1", "/DATA/1"))
    assert intact(torch_load(path))
    assert all(torch.equal(pc.load_state_dict(path)[k], SD[k]) for k in SD)
    pc.verify(path)
    twice = rezip(files / "torch.pt", tmp_path / "twice.pt",
                  rename=lambda n: n.replace("/data/2", "/DATA/1"))  # data/1 and DATA/1: torch takes either
    every_reader_refuses(twice, "differ only in letter case")


def test_a_compressed_data_pkl_is_read_as_torch_reads_it(files, tmp_path):
    path = rezip(files / "torch.pt", tmp_path / "deflated.pt", deflate={"data.pkl", "byteorder"})
    assert intact(torch_load(path))
    pc.verify(path)
    assert all(torch.equal(pc.load_state_dict(path)[k], SD[k]) for k in SD)


@pytest.mark.parametrize("damage, says", [("garbage", "its deflate stream is damaged"),
                                          ("cut", "its deflate stream ends after")])
def test_a_damaged_deflate_stream_is_refused(files, tmp_path, damage, says):
    path = rezip(files / "torch.pt", tmp_path / "deflated.pt", deflate={"data.pkl"})
    record = f"{folder(path)}/data.pkl"
    blob = path.read_bytes()
    start = zipfields.field(blob, f"local {record}", "extra length").at + 2 + len(record)
    size = zipfields.field(blob, f"central {record}", "compressed size")
    if damage == "garbage":  # 0xFF: a block type deflate does not have
        blob = blob[:start] + b"\xff" * size.get(blob) + blob[start + size.get(blob):]
    else:  # the stream's last half left out of its size
        blob = size.set(blob, size.get(blob) // 2)
        local = zipfields.field(blob, f"local {record}", "compressed size")
        blob = local.set(blob, size.get(blob))
    path.write_bytes(blob)
    every_reader_refuses(path, f"zip record {record}: {says}")


def test_compressed_tensor_data_is_refused(files, tmp_path):
    record = f"{folder(files / 'torch.pt')}/data/0"
    path = rezip(files / "torch.pt", tmp_path / "deflated.pt", deflate={"data/0"})
    assert not intact(torch_load(path, mmap=True))  # mmap reads the deflated bytes as floats
    every_reader_refuses(path, f"zip record {record} is compressed: torch stores tensor data uncompressed")


def bomb(src: Path, dst: Path, inflated: int) -> Path:
    """``src`` with its data.pkl replaced by a deflate stream of ``inflated`` MARK opcodes (sizes
    and CRC right), built from one flushed megabyte repeated: no 200 MB in memory, no slow deflate."""
    chunk = b"(" * (1 << 20)
    stream = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = stream.compress(chunk) + stream.flush(zlib.Z_FULL_FLUSH)  # resets the window: repeatable
    n = inflated // len(chunk)
    body = segment * n + zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    path = rezip(src, dst, data=lambda name, d: body if name == "data.pkl" else d)
    record = f"{folder(path)}/data.pkl"
    blob = path.read_bytes()
    for where in ("central", "local"):
        for name, value in (("method", 8), ("size", inflated), ("crc", crc)):
            blob = zipfields.field(blob, f"{where} {record}", name).set(blob, value)
    path.write_bytes(blob)
    with zipfile.ZipFile(path) as zf:  # a well-formed archive: zipfile inflates it to the byte
        with zf.open(record) as f:
            assert len(f.read(1 << 20)) == 1 << 20
    return path


@pytest.mark.parametrize("inflated", [20 << 20, 200 << 20])
def test_a_compressed_pickle_bomb_is_refused_before_anything_is_inflated(files, tmp_path, inflated):
    # a 21 KB (205 KB) file whose data.pkl inflates to 20 MB (200 MB): torch's own reader inflates it,
    # then unpickles MARK opcodes for 25 s (the larger one: minutes and 620 MB)
    path = bomb(files / "torch.pt", tmp_path / "bomb.pt", inflated)
    assert path.stat().st_size < inflated // 900
    record = f"{folder(path)}/data.pkl"
    for name, read in READERS.items():
        cpu = time.process_time()
        with pytest.raises(CheckpointError) as info:
            read(path)
        assert time.process_time() - cpu < 1.0, name  # CPU seconds, not wall time: load does not move it
        assert info.value.kind == "corrupted" and f"zip record {record} is compressed" in str(info.value)
        assert "decompression bomb" in str(info.value) and "CRC" not in str(info.value), str(info.value)


def test_a_compressed_record_that_inflates_past_its_declared_size_stops_there(files, tmp_path):
    path = rezip(files / "torch.pt", tmp_path / "liar.pt", deflate={"byteorder"},
                 data=lambda n, d: b"little" * 100_000 if n == "byteorder" else d)
    record = f"{folder(path)}/byteorder"
    path = changed(path, tmp_path / "liar2.pt", f"central {record}", "size", 6)  # says 6 bytes
    every_reader_refuses(path, f"zip record {record} inflates to more than the 6 bytes", values_only=True)
