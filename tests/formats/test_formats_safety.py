"""A pickle that would run code is refused, named, and never run."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import time
import zipfile

import pytest
import torch

from pytest_ckpt import formats
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.formats.pickle_scan import requested_globals


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("meta", [True, False])
def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, legacy, meta):
    pwned = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": Payload(pwned)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as info:
        formats.read(path, meta=meta)
    err = info.value
    assert err.kind == "unsafe"
    assert "os.system" in err.globals
    assert "os.system" in str(err) and "evil.pt" in str(err)
    assert not pwned.exists()
    with pytest.raises(CheckpointError) as info:
        formats.verify(path)
    assert info.value.kind == "unsafe" and not pwned.exists()


def test_any_global_outside_the_allowlist_is_unsafe(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"w": torch.ones(2), "cls": pickle.Pickler}, path)
    with pytest.raises(CheckpointError) as info:
        formats.read(path, meta=True)
    assert info.value.kind == "unsafe" and "pickle.Pickler" in str(info.value)


def test_bare_pickle_with_payload_is_unsafe(tmp_path):
    pwned = tmp_path / "pwned"
    path = tmp_path / "bare.pkl"
    path.write_bytes(pickle.dumps(Payload(pwned), protocol=4))
    with pytest.raises(CheckpointError) as info:
        formats.read(path, meta=True)
    assert info.value.kind == "unsafe" and "os.system" in str(info.value) and not pwned.exists()


def test_bare_pickle_without_payload_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError) as info:
        formats.read(path, meta=True)
    assert info.value.kind == "not-a-checkpoint" and "plain.pkl" in str(info.value)


def test_stack_global_with_memoized_strings_is_resolved():
    data = pickle.dumps(Payload("/nonexistent/x"), protocol=4)
    assert requested_globals(data) == ["os.system"]
    data = pickle.dumps([os.path.join, os.path.split], protocol=4)  # module string memoized, then BINGET
    assert b"\x94" in data and requested_globals(data) == ["posixpath.join", "posixpath.split"]


def test_explicit_opt_in_loads_untrusted(tmp_path):
    path = tmp_path / "trusted.pt"
    torch.save({"w": torch.ones(2), "cls": pickle.Pickler}, path)
    c = formats.read(path, meta=False, weights_only=False)
    assert c.tree["cls"] is pickle.Pickler


def test_dcp_metadata_with_payload_is_refused(tmp_path, dcp_dir):
    pwned = tmp_path / "pwned"
    (dcp_dir / ".metadata").write_bytes(pickle.dumps(Payload(pwned)))
    for call in (lambda: formats.read(dcp_dir, meta=True), lambda: formats.verify(dcp_dir)):
        with pytest.raises(CheckpointError) as info:
            call()
        assert info.value.kind == "unsafe" and "os.system" in str(info.value) and ".metadata" in str(info.value)
    assert not pwned.exists()


def test_dcp_bytes_entry_with_payload_is_refused(tmp_path, make_dcp):
    pwned = tmp_path / "pwned"
    path = make_dcp(tmp_path / "d", {"w": torch.ones(2), "evil": Payload(pwned)})
    assert formats.read(path, meta=True).tree["evil"] is None  # meta never unpickles entries
    with pytest.raises(CheckpointError) as info:
        formats.read(path, meta=False)
    assert info.value.kind == "unsafe" and not pwned.exists()


def _entry_zip(value, *, data_pkl: bytes | None = None) -> bytes:
    """What DCP stores for a non-tensor entry (``torch.save``'s zip), its data.pkl deflated
    (``data_pkl``: these bytes instead of the pickle of ``value``)."""
    saved = io.BytesIO()
    torch.save(value, saved)
    out = io.BytesIO()
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name.endswith("/data.pkl"):
                dst.writestr(name, src.read(name) if data_pkl is None else data_pkl, zipfile.ZIP_DEFLATED)
            else:
                dst.writestr(name, src.read(name))
    return out.getvalue()


def _with_entry(path, fqn: str, blob: bytes):
    """The DCP at ``path`` with entry ``fqn``'s bytes replaced by ``blob`` (appended to its storage
    file, the metadata pointing there)."""
    from pytest_ckpt.formats.dcp import read_metadata

    md = read_metadata(path)
    for index, info in list(md.storage_data.items()):
        if index.fqn == fqn:
            file = path / info.relative_path
            offset = file.stat().st_size
            with open(file, "ab") as f:
                f.write(blob)
            md.storage_data[index] = dataclasses.replace(info, offset=offset, length=len(blob))
    (path / ".metadata").write_bytes(pickle.dumps(md))
    return path


def test_dcp_entry_holding_a_compressed_bomb_is_refused_before_anything_is_inflated(tmp_path, make_dcp):
    # 20 KB of DCP entry whose data.pkl inflates to 20 MB of MARK opcodes: dcp.load inflates it all
    path = _with_entry(make_dcp(tmp_path / "d", {"w": torch.ones(2), "extra": "x"}), "extra",
                       _entry_zip(None, data_pkl=b"(" * (20 << 20)))
    assert (path / "__0_0.distcp").stat().st_size < 100_000
    for call in (lambda: formats.read(path, meta=False), lambda: formats.verify(path)):
        cpu = time.process_time()
        with pytest.raises(CheckpointError) as info:
            call()
        assert time.process_time() - cpu < 1.0
        assert info.value.kind == "corrupted", str(info.value)
        assert "non-tensor entry 'extra': zip record archive/data.pkl is compressed" in str(info.value)
        assert "decompression bomb" in str(info.value)


def test_dcp_entry_compressed_within_the_bound_is_read(tmp_path, make_dcp):
    # torch.load inflates a deflated data.pkl: within the ratio bound it is no bomb, and is read
    path = _with_entry(make_dcp(tmp_path / "d", {"w": torch.ones(2), "extra": "x"}), "extra",
                       _entry_zip({"lr": [0.1] * 100}))
    assert formats.read(path, meta=False).tree["extra"] == {"lr": [0.1] * 100}
    formats.verify(path)


def test_builtins_named_as_protocol_2_names_them_are_read_as_torch_reads_them(tmp_path):
    # torch.save pickles a set as __builtin__.set; torch's weights-only loader reads it as builtins.set
    path = tmp_path / "sets.pt"
    state = {"w": torch.ones(2), "tags": {"a", "b"}, "z": 1 + 2j, "raw": bytearray(b"x")}
    torch.save(state, path)
    assert torch.load(path, weights_only=True)["tags"] == {"a", "b"}
    formats.verify(path)
    tree = formats.read(path, meta=False).tree
    assert (tree["tags"], tree["z"], tree["raw"]) == ({"a", "b"}, 1 + 2j, bytearray(b"x"))
    # what torch refuses stays refused, named as torch names it
    torch.save({"w": torch.ones(2), "frozen": frozenset({1})}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError) as info:
        formats.verify(path)
    assert info.value.kind == "unsafe" and "builtins.frozenset" in str(info.value)
    assert "__builtin__" not in str(info.value)
