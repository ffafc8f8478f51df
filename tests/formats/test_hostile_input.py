"""Hostile and broken input, each on a real file written by torch, safetensors or DCP and then
altered: no false pass, no hang, no raw exception, no read outside the checkpoint's directory."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import pytest_ckpt as pc
from pytest_ckpt.errors import CheckpointError

SD = {"a": torch.arange(8.0), "b": torch.arange(4.0) + 100, "c": torch.ones(3, dtype=torch.float16)}


def refused(fn, *args, kind: str | None = None, match: str | None = None) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        fn(*args)
    if kind is not None:
        assert info.value.kind == kind, str(info.value)
    if match is not None:
        assert match in str(info.value), str(info.value)
    return info.value


def every_reader_refuses(path, kind: str | None = None, match: str | None = None) -> None:
    for fn in (pc.verify, pc.schema, pc.load_state_dict, lambda p: pc.diff(SD, p)):
        refused(fn, path, kind=kind, match=match)


def rewrite_zip(src: Path, dst: Path, change) -> Path:
    """A torch zip rewritten record by record; ``change(name, data)`` returns the new bytes
    (or a list of byte strings: the record written once per item)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name: the point of one test
        for info in zin.infolist():
            out = change(info.filename, zin.read(info))
            for data in out if isinstance(out, list) else [out]:
                zout.writestr(info, data)
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    torch.save(SD, root / "torch.pt")
    pc.save(SD, root / "pc.pt")
    save_file(SD, str(root / "plain.safetensors"))
    return root


# -- torch zips: one reading of the archive, the one torch.load makes ------------------------

def test_a_storage_record_shorter_than_its_tensor_is_refused(files, tmp_path):
    path = rewrite_zip(files / "torch.pt", tmp_path / "short.pt",
                       lambda name, data: data[:16] if name.endswith("data/0") else data)
    # torch.load(mmap=True) reads past the record, into the next zip header
    assert torch.load(path, mmap=True)["a"].shape == (8,)
    every_reader_refused = refused(pc.verify, path, kind="corrupted")
    assert "storage record torch/data/0 holds 16 bytes, its storage needs 32" in str(every_reader_refused)
    every_reader_refuses(path, kind="corrupted", match="holds 16 bytes")


def test_a_storage_record_longer_than_its_tensor_is_refused_as_torch_load_refuses_it(files, tmp_path):
    path = rewrite_zip(files / "torch.pt", tmp_path / "long.pt",
                       lambda name, data: data + bytes(8) if name.endswith("data/1") else data)
    assert torch.load(path, mmap=True)["b"].tolist() == SD["b"].tolist()  # the mmap reader looks away...
    with pytest.raises(RuntimeError, match="record size"):  # ...torch.load checks each record's size
        torch.load(path)
    every_reader_refuses(path, kind="corrupted", match="storage record torch/data/1 holds 24 bytes, its storage needs 16")


def _storage_offset_set(data: bytes, offset: int) -> bytes:
    """``data.pkl`` of one tensor with its storage offset (the first small int after the storage) replaced."""
    import pickletools

    ops = list(pickletools.genops(data))
    persid = next(i for i, (op, _, _) in enumerate(ops) if op.name == "BINPERSID")
    op, _, pos = next(o for o in ops[persid:] if o[0].name == "BININT1")
    return data[:pos + 1] + bytes([offset]) + data[pos + 2:]


def test_a_tensor_whose_storage_offset_reaches_past_its_storage_is_refused(tmp_path):
    torch.save({"v": torch.arange(8.0)[4:]}, tmp_path / "view.pt")  # a view: storage offset 4, 4 of 8 elements
    path = rewrite_zip(tmp_path / "view.pt", tmp_path / "past.pt",
                       lambda name, data: _storage_offset_set(data, 6) if name.endswith("data.pkl") else data)
    for mmap in (False, True):  # elements 6 to 9 of a storage of 8: torch would have to grow the storage
        with pytest.raises(RuntimeError, match="resize storage that is not resizable"):
            torch.load(path, mmap=mmap)
    every_reader_refuses(path, kind="corrupted", match="tensor v reaches element 10 of a storage of 8")


def test_duplicate_zip_entries_are_refused(files, tmp_path):
    zeros = torch.zeros(8).numpy().tobytes()
    path = rewrite_zip(files / "torch.pt", tmp_path / "dup.pt",
                       lambda name, data: [data, zeros] if name.endswith("data/0") else data)
    assert torch.equal(torch.load(path)["a"], torch.zeros(8))  # torch reads the second copy
    with zipfile.ZipFile(path) as zf:
        assert torch.frombuffer(bytearray(zf.read("torch/data/0")), dtype=torch.float32).sum() == 0
    every_reader_refuses(path, kind="corrupted", match="zip record torch/data/0 appears twice")


def _central_directory(blob: bytes) -> tuple[int, int]:
    end = blob.rfind(b"PK\x05\x06")
    (start,) = struct.unpack_from("<I", blob, end + 16)
    return start, end


@pytest.mark.parametrize("name", ["torch.pt", "pc.pt"])
def test_a_damaged_central_directory_is_read_as_torch_reads_it_or_refused(files, tmp_path, name):
    blob = (files / name).read_bytes()
    start, end = _central_directory(blob)
    path = tmp_path / name
    agreed = refusals = 0
    for at in range(start, end, max(1, (end - start) // 40)):
        damaged = bytearray(blob)
        damaged[at] ^= 0x5A
        path.write_bytes(bytes(damaged))
        try:
            ours = pc.load_state_dict(path)
        except CheckpointError:
            refusals += 1
            continue
        try:
            theirs = torch.load(path, weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch refusing what we read is the failure
            raise AssertionError(f"byte {at}: we read the file, torch.load refuses it: {e}") from None
        assert ours.keys() == {k for k in theirs if isinstance(theirs[k], torch.Tensor)}, at
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), f"byte {at}: we read other values than torch"
        agreed += 1
    assert refusals and agreed + refusals >= 40


@pytest.mark.parametrize("name", ["torch.pt", "pc.pt"])
def test_a_zeroed_run_is_refused_by_every_reader_that_reads_values(files, tmp_path, name):
    blob = bytearray((files / name).read_bytes())
    with zipfile.ZipFile(files / name) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/1"))
    n, extra = struct.unpack_from("<HH", blob, info.header_offset + 26)
    start = info.header_offset + 30 + n + extra
    blob[start:start + 8] = bytes(8)  # b's first two float32s zeroed: torch.load reads zeros
    path = tmp_path / name
    path.write_bytes(bytes(blob))
    assert torch.load(path)["b"][0] == 0
    for fn in (pc.verify, pc.load_state_dict, lambda p: pc.diff(SD, p)):
        refused(fn, path, kind="corrupted", match="fails its CRC check")


def test_a_directory_entry_claiming_more_than_the_file_holds_is_refused_at_once(files, tmp_path):
    blob = bytearray((files / "torch.pt").read_bytes())
    start, end = _central_directory(bytes(blob))
    at = blob.find(b"torch/data/0", start) - 46  # its central directory entry
    struct.pack_into("<II", blob, at + 20, 256 << 20, 256 << 20)  # compressed, uncompressed size
    path = tmp_path / "big.pt"
    path.write_bytes(bytes(blob))
    every_reader_refuses(path)


# -- pickles: the kind and the global right, whatever the opcodes ----------------------------

class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("protocol", range(6))
def test_a_bare_pickle_of_any_protocol_is_unsafe_naming_the_global(tmp_path, protocol):
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps({"w": Payload()}, protocol=protocol))
    refused(pc.verify, path, kind="unsafe", match="os.system")
    plain = tmp_path / f"plain{protocol}.pkl"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    refused(pc.verify, plain, kind="not-a-checkpoint", match="bare pickle")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_torch_file_of_any_pickle_protocol_is_unsafe_naming_the_global(tmp_path, protocol):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "x": Payload()}, path, pickle_protocol=protocol)
    for fn in (pc.verify, pc.load_state_dict):
        err = refused(fn, path, kind="unsafe", match="os.system")
        assert err.globals == ("os.system",)


# An opcode stack model that ignores POP sees collections.OrderedDict on top, where the real
# stack holds posix/system for STACK_GLOBAL (directly, or memoized after the POPs).
TRICKS = {
    "stack-global-pop": b"\x80\x04\x8c\x05posix\x8c\x06system\x8c\x0bcollections\x8c\x0bOrderedDict00"
                        b"\x93\x8c\x04echo\x85R.",
    "memo-pop": b"\x80\x02\x8c\x05posix\x8c\x06system\x8c\x0bcollections\x8c\x0bOrderedDict00q\x010q\x000"
                b"h\x00h\x01\x93\x8c\x04echo\x85R.",
    "global-proto0": b"cposix\nsystem\n(S'echo'\ntR.",
}


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_opcode_tricks_in_a_torch_file_are_unsafe_naming_the_global(files, tmp_path, trick):
    path = rewrite_zip(files / "torch.pt", tmp_path / "trick.pt",
                       lambda name, data: TRICKS[trick] if name.endswith("data.pkl") else data)
    for fn in (pc.verify, pc.load_state_dict, pc.schema):
        err = refused(fn, path, kind="unsafe")
        assert "os.system" in err.globals, str(err)


# -- names inside a checkpoint stay inside its directory --------------------------------------

@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    (root / "elsewhere").mkdir()
    save_file({"b": torch.zeros(4)}, str(root / "elsewhere" / "private.safetensors"))
    ckpt = root / "ckpt"
    ckpt.mkdir()
    save_file({"a": SD["a"]}, str(ckpt / "model-00001-of-00002.safetensors"))
    save_file({"b": SD["b"]}, str(ckpt / "model-00002-of-00002.safetensors"))
    return root


@pytest.mark.parametrize("shard", ["../elsewhere/private.safetensors", "ABSOLUTE", "C:\\private.safetensors",
                                   "sub/../../elsewhere/private.safetensors"])
def test_an_index_naming_a_file_outside_its_directory_is_unsafe(hf, tmp_path, shard):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(hf / "ckpt", ckpt)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(hf / "elsewhere" / "private.safetensors", tmp_path / "elsewhere")
    if shard == "ABSOLUTE":
        shard = str(tmp_path / "elsewhere" / "private.safetensors")
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": shard}}))
    for fn in (pc.verify, pc.schema, pc.load_state_dict):
        err = refused(fn, ckpt, kind="unsafe", match="leaves the checkpoint's directory")
        assert err.path.endswith("model.safetensors.index.json") and repr(shard) in str(err)


def test_the_hugging_face_cache_layout_of_symlinks_into_blobs_is_read(hf, tmp_path):
    # models--org--name/snapshots/<rev>/<file> -> ../../blobs/<sha>
    repo = tmp_path / "models--org--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / "0123abc"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (hf / "ckpt" / "model.safetensors.index.json").write_text(json.dumps(index))
    for i, f in enumerate(sorted((hf / "ckpt").iterdir())):
        shutil.copy(f, blobs / f"sha{i}")
        os.symlink(f"../../blobs/sha{i}", snap / f.name)
    (hf / "ckpt" / "model.safetensors.index.json").unlink()
    pc.verify(snap)
    loaded = pc.load_state_dict(snap)
    assert torch.equal(loaded["a"], SD["a"]) and torch.equal(loaded["b"], SD["b"])
    assert pc.diff({"a": SD["a"], "b": SD["b"]}, snap).ok


@pytest.fixture(scope="module")
def dcp_base(tmp_path_factory) -> Path:
    import torch.distributed.checkpoint as dcp

    path = tmp_path_factory.mktemp("dcp") / "base"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.arange(6.0).reshape(2, 3), "opt": {"step": 3, "lr": [0.1, 0.2]}},
                 checkpoint_id=path, no_dist=True)
    return path


def altered(base: Path, to: Path, mutate) -> Path:
    """A copy of a real DCP directory whose metadata ``mutate(directory, metadata)`` changed."""
    shutil.copytree(base, to)
    md = pickle.loads((to / ".metadata").read_bytes())  # our own test file: trusted
    mutate(to, md)
    (to / ".metadata").write_bytes(pickle.dumps(md))
    return to


def test_a_dcp_storage_path_outside_the_directory_is_unsafe(dcp_base, tmp_path):
    def outside(d, md):
        (tmp_path / "elsewhere").mkdir()
        shutil.copy(d / "__0_0.distcp", tmp_path / "elsewhere" / "data.distcp")
        for k, v in md.storage_data.items():
            md.storage_data[k] = dataclasses.replace(v, relative_path="../elsewhere/data.distcp")
    path = altered(dcp_base, tmp_path / "ckpt", outside)
    for fn in (pc.verify, pc.load_state_dict):
        refused(fn, path, kind="unsafe", match="'../elsewhere/data.distcp' leaves the checkpoint's directory")


# -- sizes bounded by what the file holds ------------------------------------------------------

@pytest.mark.parametrize("size", [(-2, 3), (2**62, 2**62), (2**40,)], ids=["negative", "overflow", "2^40"])
def test_dcp_sizes_beyond_the_storage_are_corrupted(dcp_base, tmp_path, size):
    def resize(d, md):
        md.state_dict_metadata["w"] = dataclasses.replace(md.state_dict_metadata["w"], size=torch.Size(size))
    path = altered(dcp_base, tmp_path / "ckpt", resize)
    for fn in (pc.verify, pc.schema, pc.load_state_dict):
        refused(fn, path, kind="corrupted", match="'w'")


def test_a_dcp_planner_data_index_beyond_the_entries_is_corrupted_at_once(dcp_base, tmp_path):
    def far(d, md):
        md.planner_data["opt.lr"] = ("opt", 10**9)
    path = altered(dcp_base, tmp_path / "ckpt", far)
    refused(pc.schema, path, kind="corrupted", match="list index 1000000000")


def test_dcp_verify_reads_the_pickled_entries_through_the_safe_loader(tmp_path):
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.ones(2), "x": Payload()}, checkpoint_id=tmp_path / "ckpt", no_dist=True)
    for fn in (pc.verify, pc.load_state_dict):
        err = refused(fn, tmp_path / "ckpt", kind="unsafe", match="non-tensor entry 'x' asks for os.system")
        assert err.globals == ("os.system",)


def test_dcp_verify_reads_the_storage_byte_ranges(dcp_base, tmp_path):
    md = pickle.loads((dcp_base / ".metadata").read_bytes())
    entry = next(v for k, v in md.storage_data.items() if k.fqn == "opt.lr")
    path = tmp_path / "ckpt"
    shutil.copytree(dcp_base, path)
    blob = bytearray((path / entry.relative_path).read_bytes())
    blob[entry.offset:entry.offset + entry.length] = bytes(entry.length)  # the pickled entry zeroed
    (path / entry.relative_path).write_bytes(bytes(blob))
    refused(pc.verify, path, kind="corrupted", match="'opt.lr'")


def test_a_safetensors_shape_of_unbounded_empty_dimensions_is_corrupted(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(0, 2, 2)}, str(path))
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = blob[8:8 + n].replace(b"[0,2,2]", f"[0,{2**62},{2**62}]".encode())
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + blob[8 + n:])
    every_reader_refuses(path, kind="corrupted", match="more than torch can index")


def test_a_legacy_storage_claiming_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"a": torch.arange(8.0)}, path, _use_new_zipfile_serialization=False)
    blob = path.read_bytes()
    at = blob.index(b"X\x03\x00\x00\x00cpu") + 10  # the storage's element count follows its location
    assert blob[at:at + 2] == b"K\x08"  # (memoized: BINPUT)
    path.write_bytes(blob[:at] + b"J" + struct.pack("<i", 2**30) + blob[at + 2:])  # 4 GiB of floats
    every_reader_refuses(path, kind="corrupted", match="storages claim 4294967296 bytes")


# -- FIFOs, devices and directories: said for what they are, never opened ----------------------

def test_a_fifo_as_the_checkpoint_is_said_not_read(tmp_path):
    os.mkfifo(tmp_path / "model.pt")
    every_reader_refuses(tmp_path / "model.pt", kind="unreadable", match="is a FIFO (named pipe)")


@pytest.mark.parametrize("what", ["fifo", "/dev/zero", "directory"])
def test_a_shard_that_is_no_regular_file_is_said_for_what_it_is(hf, tmp_path, what):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(hf / "ckpt", ckpt)
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "other.safetensors"}}))
    if what == "fifo":
        os.mkfifo(ckpt / "other.safetensors")
    elif what == "directory":
        (ckpt / "other.safetensors").mkdir()
    else:
        os.symlink("/dev/zero", ckpt / "other.safetensors")
    said = {"fifo": "a FIFO", "/dev/zero": "a device", "directory": "a directory"}[what]
    for fn in (pc.verify, pc.load_state_dict):
        refused(fn, ckpt, kind="unreadable", match=f"shard other.safetensors named by model.safetensors.index.json is {said}")


def test_a_fifo_as_a_dcp_storage_file_is_said_not_read(dcp_base, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(dcp_base, path)
    (path / "__0_0.distcp").unlink()
    os.mkfifo(path / "__0_0.distcp")
    for fn in (pc.verify, pc.load_state_dict, pc.schema):
        refused(fn, path, kind="unreadable", match="is a FIFO")


# -- nesting and types: CheckpointError, never RecursionError or TypeError ---------------------

DEEP = "[" * 100_000 + "]" * 100_000


def _safetensors_with_metadata(path: Path, metadata: dict) -> Path:
    header = json.dumps({"__metadata__": metadata, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    return path


@pytest.mark.parametrize("where", ["header", "pytest_ckpt", "not-a-string"])
def test_a_hostile_safetensors_header_is_corrupted(tmp_path, where):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    assert load_file(str(path))["w"].shape == (2,)
    if where == "header":
        header = ('{"__metadata__":' + DEEP + "}").encode()
        header += b" " * (-len(header) % 8)
        path.write_bytes(struct.pack("<Q", len(header)) + header)
    elif where == "pytest_ckpt":
        save_file({"w": torch.zeros(2)}, str(path), metadata={"pytest_ckpt": DEEP})
    else:
        _safetensors_with_metadata(path, {"pytest_ckpt": 5})
    every_reader_refuses(path, kind="corrupted")


def test_a_deep_index_is_corrupted(hf, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(hf / "ckpt", ckpt)
    (ckpt / "model.safetensors.index.json").write_text('{"weight_map": ' + DEEP + "}")
    refused(pc.verify, ckpt, kind="corrupted")


def test_a_deep_stored_record_in_a_torch_file_is_corrupted(files, tmp_path):
    path = rewrite_zip(files / "pc.pt", tmp_path / "deep.pt",
                       lambda name, data: DEEP.encode() if name.endswith("pytest_ckpt.json") else data)
    every_reader_refuses(path, kind="corrupted", match="nests too deeply")


def test_a_stored_shape_that_is_not_a_list_is_corrupted(files, tmp_path):
    def edit(name, data):
        if not name.endswith("pytest_ckpt.json"):
            return data
        stored = json.loads(data)
        stored["schema"]["a"]["shape"] = 7
        return json.dumps(stored).encode()
    path = rewrite_zip(files / "pc.pt", tmp_path / "shape.pt", edit)
    every_reader_refuses(path, kind="corrupted", match="stored shape 7 is not a list")


def test_a_legacy_file_nested_thousands_deep_is_corrupted(tmp_path):
    import sys

    deep: list = []
    node = deep
    for _ in range(5000):
        node.append([])
        node = node[0]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # torch's own pickler recurses while saving it
    try:
        torch.save({"w": torch.ones(2), "deep": deep}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    finally:
        sys.setrecursionlimit(limit)
    every_reader_refuses(tmp_path / "legacy.pt")


# -- writes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_symlinked_target_is_written_through(tmp_path, suffix):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / f"model{suffix}"
    pc.save({"w": torch.ones(2)}, target)
    os.chmod(target, 0o640)
    link = tmp_path / f"link{suffix}"
    os.symlink(f"real/model{suffix}", link)
    pc.save({"w": torch.zeros(2)}, link)
    assert link.is_symlink() and os.readlink(link) == f"real/model{suffix}"
    assert torch.equal(pc.load_state_dict(target)["w"], torch.zeros(2))
    assert os.stat(target).st_mode & 0o777 == 0o640
