"""safetensors headers read as the safetensors library reads them: the same bytes fed to
``safetensors.torch.load_file`` (the Rust reader) and to every reader here, and the verdicts agree;
a refusal names the field."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pytest_ckpt as pc
from pytest_ckpt.errors import CheckpointError

W = '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
X = '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],'  # an entry, open for one more field

#: header -> what the refusal names ("" where the safetensors library reads it)
HEADERS = {
    "{" + W + "}": "",
    '{"w":{"dtype":"U8","shape":[9],"data_offsets":[true,9]}}': "data_offsets [True, 9]",
    '{"w":{"dtype":"F32","shape":[2],"data_offsets":[false,8]}}': "data_offsets [False, 8]",
    '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8]}}': "data_offsets [0.0, 8]",
    '{"w":{"dtype":"F32","shape":[2],"data_offsets":[-0,8]}}': "data_offsets [-0.0, 8]",
    '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8e0]}}': "data_offsets [0, 8.0]",
    '{"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}': "shape [2.0]",
    '{"w":{"dtype":"F32","shape":[true,2],"data_offsets":[0,8]}}': "shape [True, 2]",
    '{"w":{"dtype":"F32","shape":[-0,2],"data_offsets":[0,0]}}': "shape [-0.0, 2]",
    '{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}': "shape [-2]",
    '{"w":{"dtype":"F32","shape":[18446744073709551617],"data_offsets":[0,8]}}': "shape [18446744073709551617]",
    '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}': "data_offsets [0, 8, 8]",
    '{"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}': "dtype 'f32'",
    '{"w":{"dtype":"F32","shape":[2]}}': "the field data_offsets is missing",
    '{"__metadata__":{"a":"1"},"__metadata__":{"a":"2"},' + W + "}": 'the field "__metadata__" appears twice',
    '{"__metadata__":{"a":"1"},"__meta\\u0064ata__":{"a":"2"},' + W + "}": 'the field "__metadata__" appears twice',
    '{"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}': 'the field "dtype" appears twice',
    '{"w\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}': "lone surrogate",
    '{"w\\uDC00":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}': "lone surrogate",
    '{"__metadata__":{"a":"\\ud800"},' + W + "}": "lone surrogate",
    "{" + X + '"x":"\\ud800"}}': "lone surrogate",
    '{"w\\ud83d\\ude00":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}': "",  # a surrogate pair: one character
    "{" + X + '"x":1e400}}': "the number 1e400 is out of range",
    "{" + X + '"x":NaN}}': "NaN",
    '{"__metadata__":[],' + W + "}": "__metadata__ is not a JSON object of strings",
    '{"__metadata__":{"a":1},' + W + "}": "__metadata__ is not a JSON object of strings",
    '{"w":[1]}': "it is list, not an object",
    "{" + W + "}x": "not valid JSON",
    # what the library reads: unknown fields, duplicates it keeps the last of, whitespace, null metadata
    "{" + X + '"x":1.5}}': "",
    "{" + X + '"x":-0}}': "",
    "{" + X + '"x":1,"x":2}}': "",
    "{" + W + "," + W + "}": "",
    '{"__metadata__":{"a":"1","a":"2"},' + W + "}": "",
    '{"__metadata__":null,' + W + "}": "",
    '{"layer-0":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}': "",
    " \t\n{" + W + "}": "",
}


def header_file(path: Path, header: str | bytes, data: bytes = bytes(8)) -> Path:
    raw = header.encode("utf-8", "surrogatepass") if isinstance(header, str) else header
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def reference_reads(path: Path) -> bool:
    try:
        load_file(str(path))
    except Exception:  # noqa: BLE001 - the library's refusal, whatever its type
        return False
    return True


@pytest.mark.parametrize("header", list(HEADERS), ids=range(len(HEADERS)))
def test_a_header_is_refused_exactly_when_the_safetensors_library_refuses_it(tmp_path, header):
    names = HEADERS[header]
    empty = '"shape":[-0,2]' in header
    path = header_file(tmp_path / "h.safetensors", header, b"" if empty else bytes(8))
    assert reference_reads(path) == (names == ""), "the expectation no longer matches the library"
    for read in (pc.verify, pc.schema, pc.load_state_dict, lambda p: pc.diff({"w": torch.zeros(2)}, p)):
        if not names:
            read(path)
            continue
        with pytest.raises(CheckpointError) as info:
            read(path)
        assert info.value.kind == "corrupted" and names in str(info.value), str(info.value)


@pytest.mark.parametrize("raw", [b'{"w\xff":{}}', '{"w":{}}'.encode("utf-16-le")], ids=["latin", "utf16"])
def test_a_header_that_is_not_utf8_is_refused(tmp_path, raw):
    path = header_file(tmp_path / "h.safetensors", raw)
    assert not reference_reads(path)
    with pytest.raises(CheckpointError) as info:
        pc.verify(path)
    assert info.value.kind == "corrupted"


def test_a_header_length_past_the_file_is_corrupted_not_another_format(tmp_path):
    path = header_file(tmp_path / "h.safetensors", "{" + W + "}")
    blob = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 40) + blob[8:])
    assert not reference_reads(path)
    with pytest.raises(CheckpointError) as info:
        pc.verify(path)
    assert info.value.kind == "corrupted" and "says 1099511627776 bytes, more than the file holds" in str(info.value)
