"""A tensor saved without data (a meta tensor) is a cause of its own: the other tensors are still
compared, verify refuses the file, and load_into checks before it copies (never half-loads)."""

from __future__ import annotations

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.errors import CheckpointError, CheckpointMismatch


@pytest.fixture(scope="module")
def half_meta(tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "model.pt"
    torch.save({"weight": torch.full((4, 4), 7.0), "bias": torch.empty(4, device="meta")}, path)
    return path


def test_diff_reports_the_tensor_without_data_and_still_compares_the_others(half_meta):
    d = pc.diff({"weight": torch.ones(4, 4), "bias": torch.ones(4)}, half_meta)
    assert not d.ok and d.values_compared
    assert d.dataless == ["bias"] and d.values == {"weight": 6.0}
    kinds = [n.kind for n in d.notes if not n.info]
    assert kinds == ["incomplete", "values"], str(d)
    assert "holds no data (saved as meta tensors): bias" in str(d)
    with pytest.raises(CheckpointMismatch):
        pc.assert_same({"weight": torch.full((4, 4), 7.0), "bias": torch.ones(4)}, half_meta)


def test_verify_refuses_a_file_with_a_tensor_without_data(half_meta):
    with pytest.raises(CheckpointError) as info:
        pc.verify(half_meta)
    assert info.value.kind == "incomplete" and "bias" in str(info.value)


def test_load_into_checks_first_and_copies_nothing(half_meta):
    model = torch.nn.Linear(4, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatch) as info:
        pc.load_into(model, half_meta)
    assert "bias" in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # strict=False copies what has data and reports the rest
    report = pc.load_into(model, half_meta, strict=False)
    assert report.loaded == ["weight"] and report.diff.dataless == ["bias"]
    assert torch.equal(model.weight, torch.full((4, 4), 7.0)) and torch.equal(model.bias, before["bias"])


def test_load_into_from_a_state_dict_with_a_meta_tensor_copies_nothing():
    model = torch.nn.Linear(2, 2)
    before = model.weight.detach().clone()
    with pytest.raises(CheckpointMismatch, match="no data"):
        pc.load_into(model, {"weight": torch.zeros(2, 2), "bias": torch.empty(2, device="meta")})
    assert torch.equal(model.weight, before)


def test_a_model_on_the_meta_device_still_compares_by_schema(half_meta):
    # a schema-only source (a model built on meta) is no finding: values are simply not compared
    d = pc.diff(torch.nn.Linear(4, 4, device="meta").state_dict(), {"weight": torch.ones(4, 4),
                                                                    "bias": torch.ones(4)})
    assert d.ok and not d.values_compared and not d.dataless


def test_load_state_dict_says_incomplete_as_verify_does(half_meta):
    with pytest.raises(CheckpointError) as info:
        pc.load_state_dict(half_meta)
    assert info.value.kind == "incomplete" and info.value.path == str(half_meta)
    assert str(info.value).endswith("1 tensor without data (saved as meta tensors): bias")
