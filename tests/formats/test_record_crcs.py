"""A torch zip's tensor records checksummed in the comparison's own pass over their values
(``pc.diff``): every record is still checked, whichever way a tensor reads it (whole, tied, a
view, transposed, bool, not compared at all), and an intact file is never refused."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.checkpoint.resolve import resolve
from pytest_ckpt.compare.compare import compare
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.formats import zipcheck


def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    whole = torch.randn(600, 500, generator=g)  # 1.2 MB: more than one chunk of the byte pass
    return {
        "whole": whole,
        "tied": whole,
        "view": torch.randn(1000, 300, generator=g)[100:],  # saved with its whole storage
        "transposed": torch.randn(400, 700, generator=g).t(),
        "mask": torch.rand(300_000, generator=g) > 0.5,  # compared through a copy
        "small": torch.arange(10.0),
        "second": torch.randn(300_000, generator=g),
    }


SD = state()
CLAIMED = {"whole", "small", "second"}  # read whole, in place, by the comparison


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crcs") / "m.pt"
    torch.save(SD, path)
    return path


def records(path: Path) -> dict[str, str]:
    """Each tensor's storage record, found by its bytes."""
    layout = zipcheck.check(path)
    by_bytes = {zipcheck.read(path, layout, name): span.record
                for name, span in layout.spans.items() if name.startswith("data/")}
    out = {}
    for name, t in torch.load(path, weights_only=True).items():
        storage = torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage())
        out[name] = by_bytes[storage.numpy().tobytes()]
    return out


def flipped(path: Path, record: str, dst: Path, at: int = 1000) -> Path:
    span = next(s for s in zipcheck.check(path).spans.values() if s.record == record)
    blob = bytearray(path.read_bytes())
    blob[span.start + min(at, span.size - 1)] ^= 0x04
    dst.write_bytes(bytes(blob))
    return dst


def test_an_intact_file_matches_and_its_large_records_are_checked_in_the_comparisons_pass(saved):
    assert pc.diff(SD, saved).ok
    expected = resolve(SD, values=True)
    actual = resolve(saved, values=True, like=expected, defer_crcs=True)
    compare(expected, actual)
    of = records(saved)
    assert actual.crcs.claimed == {of[n] for n in CLAIMED}
    assert actual.crcs.finished


@pytest.mark.parametrize("name", [n for n in SD if n != "tied"])
def test_a_changed_byte_in_any_record_is_refused_whichever_way_its_tensor_is_read(name, saved, tmp_path):
    record = records(saved)[name]
    bad = flipped(saved, record, tmp_path / "bad.pt", at=700_000)
    with pytest.raises(CheckpointError, match=f"zip record {record} fails its CRC check") as info:
        pc.diff(SD, bad)
    assert info.value.kind == "corrupted"
    with pytest.raises(CheckpointError, match=f"zip record {record} fails its CRC check"):
        pc.diff(bad, SD)  # the file on the expected side


def test_a_record_the_comparison_never_reads_is_still_checked(saved, tmp_path):
    bad = flipped(saved, records(saved)["whole"], tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        pc.diff(SD, bad, only=["small"])
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        pc.diff({"other": torch.zeros(3)}, bad)  # no name in common: nothing compared


def test_two_damaged_files_are_both_checked(saved, tmp_path):
    bad = flipped(saved, records(saved)["second"], tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        pc.diff(saved, bad)
    with pytest.raises(CheckpointError, match="bad.pt"):
        pc.diff(bad, saved)


def test_a_file_torch_reads_byteswapped_is_checked_on_its_bytes_on_disk(saved, tmp_path):
    # torch swaps a big-endian file's storages in memory: the CRCs cover the bytes on disk
    path = tmp_path / "big.pt"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = b"big" if info.filename.endswith("/byteorder") else src.read(info)
            dst.writestr(info.filename, data)
    swapped = torch.load(path, weights_only=True)
    assert not torch.equal(swapped["second"], SD["second"])
    assert pc.diff(swapped, path).ok
    bad = flipped(path, records(saved)["second"], tmp_path / "bad.pt")  # the same names: copied
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        pc.diff(swapped, bad)
