"""Reading every format, with and without data, from real files."""

from __future__ import annotations

import shutil

import pytest
import torch

from pytest_ckpt import formats
from pytest_ckpt.checkpoint.ties import storage_key
from pytest_ckpt.formats import safetensors as st


@pytest.mark.parametrize("fixture, fmt", [
    ("torch_zip", "torch"), ("torch_legacy", "torch-legacy"), ("safetensors_file", "safetensors"),
])
def test_read_values_and_meta_agree(request, fixture, fmt, state, same):
    path = request.getfixturevalue(fixture)
    values = formats.read(path, meta=False)
    schema = formats.read(path, meta=True)
    assert values.format == schema.format == fmt
    assert values.files == [path]
    expected = state if fmt != "safetensors" else {k: v for k, v in state.items() if k != "lm_head.weight"}
    if fmt == "torch-legacy":
        expected = {k: v for k, v in state.items() if k != "f8"}
    same(expected, values.tree)
    for name, t in schema.tree.items():
        assert t.device.type == "meta"
        assert (t.shape, t.dtype) == (expected[name].shape, expected[name].dtype)
    assert all(t.device.type == "cpu" for t in values.tree.values())
    assert values.ties_expressible == (fmt != "safetensors")
    assert values.stored is None


@pytest.mark.parametrize("fixture", ["torch_zip", "torch_legacy"])
def test_torch_ties_visible_with_and_without_data(request, fixture):
    path = request.getfixturevalue(fixture)
    for meta in (True, False):
        c = formats.read(path, meta=meta)
        tree, key = c.tree, c.tie_key or storage_key  # meta: the reader knows its storages
        assert key(tree["embed.weight"]) == key(tree["lm_head.weight"]) is not None
        assert key(tree["embed.weight"]) != key(tree["layers.0.w"])
        assert key(tree["empty"]) is None  # empty storages are never ties


def test_torch_meta_reads_no_data(torch_zip):
    tree = formats.read(torch_zip, meta=True).tree
    storage = tree["embed.weight"].untyped_storage()
    assert storage.device.type == "meta"


def test_safetensors_meta_parses_header_only(safetensors_file):
    c = formats.read(safetensors_file, meta=True)
    assert c.tie_key(c.tree["embed.weight"]) is None  # safetensors from other writers: no ties
    assert c.tree["f8"].dtype == torch.float8_e4m3fn


def test_safetensors_values_are_memory_mapped(safetensors_file):
    tree = formats.read(safetensors_file, meta=False).tree
    ptrs = {t.untyped_storage().data_ptr() for t in tree.values()}
    assert len(ptrs) == 1  # one private map of the file, no per-tensor copy
    tree["embed.weight"].add_(1)  # private mapping: the file stays as it was
    again = formats.read(safetensors_file, meta=False).tree
    assert not torch.equal(again["embed.weight"], tree["embed.weight"])


def test_safetensors_misaligned_offsets_fall_back_to_a_copy(tmp_path):
    from safetensors.torch import load_file, save_file

    p = tmp_path / "odd.safetensors"
    save_file({"a": torch.tensor([1], dtype=torch.uint8), "b": torch.arange(3, dtype=torch.float32)}, str(p))
    header = st.read_header(p)
    got = formats.read(p, meta=False).tree
    for k, v in load_file(str(p)).items():
        assert torch.equal(got[k], v)
    assert header.data_start % 8 == 0


def test_dtype_table_round_trips():
    for code, dtype in st.DTYPES.items():
        assert st.CODES[dtype] == code
    for code in ["BOOL", "U8", "I8", "I16", "I32", "I64", "F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"]:
        assert code in st.DTYPES


def test_dcp_meta_and_values(dcp_dir, state, same):
    schema = formats.read(dcp_dir, meta=True)
    assert schema.format == "dcp" and not schema.ties_expressible
    assert schema.tree["model"]["embed.weight"].device.type == "meta"
    assert schema.tree["step"] is None  # non-tensor entries are not read without data
    values = formats.read(dcp_dir, meta=False)
    assert values.tree["step"] == 12 and values.tree["history"] == [1.5, 2.5]
    expected = {k: v for k, v in state.items() if k not in ("lm_head.weight", "f8")}
    same(expected, values.tree["model"])
    assert dcp_dir / ".metadata" in values.files and any(f.suffix == ".distcp" for f in values.files)


def test_dcp_nested_lists_rebuilt(tmp_path, make_dcp):
    tree = {"opt": {"state": {0: {"exp_avg": torch.ones(2)}}, "groups": [{"lr": 0.1, "w": torch.zeros(3)}]}}
    path = make_dcp(tmp_path / "d", tree)
    got = formats.read(path, meta=False).tree
    assert got["opt"]["groups"][0]["lr"] == 0.1
    assert torch.equal(got["opt"]["groups"][0]["w"], torch.zeros(3))


def test_directory_with_one_checkpoint_file(tmp_path, safetensors_file):
    d = tmp_path / "single"
    d.mkdir()
    shutil.copy(safetensors_file, d / "model.safetensors")
    c = formats.read(d, meta=True)
    assert c.format == "safetensors" and c.files == [d / "model.safetensors"] and c.path == d


def test_torch_file_with_safetensors_suffix_detected_by_content(tmp_path, state):
    p = tmp_path / "lies.safetensors"
    torch.save(state, p)
    c = formats.read(p, meta=False)
    assert c.format == "torch"
    assert torch.equal(c.tree["embed.weight"], state["embed.weight"])


def test_torch_zip_nested_training_state(tmp_path, state):
    p = tmp_path / "train.ckpt"
    torch.save({"epoch": 3, "model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}, p)
    c = formats.read(p, meta=True)
    assert c.tree["epoch"] == 3 and c.tree["model"]["embed.weight"].shape == (8, 4)


def test_safetensors_meta_ties_are_only_the_stored_ones(tmp_path):
    # meta tensors of one shape and dtype are one object: the tied names must keep their own
    import pytest_ckpt as pc

    w = torch.randn(4, 3)
    p = tmp_path / "tied.safetensors"
    pc.save({"embed.weight": w, "lm_head.weight": w, "a.weight": torch.randn(4, 3), "b.weight": torch.randn(4, 3)}, p)
    c = formats.read(p, meta=True)
    key = c.tie_key
    assert key(c.tree["embed.weight"]) == key(c.tree["lm_head.weight"]) is not None
    assert key(c.tree["a.weight"]) is None and key(c.tree["b.weight"]) is None
    assert pc.schema(p)["a.weight"] == pc.schema(p)["embed.weight"]
