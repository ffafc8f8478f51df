"""The strict-load audit: real load_state_dict(strict=False) calls that drop keys are caught."""

import torch

import pytest_ckpt as pc
from pytest_ckpt.plugin.audit import LoadAudit
from tests.tinymodel import tiny


def test_a_dropping_strict_false_load_is_recorded_with_its_caller():
    sd = {k: v for k, v in tiny(4).state_dict().items() if not k.startswith("layers.3.")}
    model = tiny(4)
    with LoadAudit() as audit:
        model.load_state_dict(sd, strict=False)  # the line the audit must name
    (dropped,) = audit.dropped
    assert dropped.module == "TinyLM"
    assert all(k.startswith("layers.3.") for k in dropped.missing) and dropped.unexpected == []
    assert dropped.where.endswith(f"test_audit.py:{_line_of('the line the audit must name')}")
    assert "layers.3.*" in dropped.describe()


def test_full_loads_strict_loads_and_library_loads_are_silent(tmp_path):
    saved = tiny(2)
    path = tmp_path / "m.pt"
    torch.save({k: v for k, v in saved.state_dict().items() if not k.startswith("layers.1.")}, path)
    with LoadAudit() as audit:
        tiny(2).load_state_dict(saved.state_dict(), strict=False)
        tiny(2).load_state_dict(saved.state_dict())
        pc.load_into(tiny(2), path, strict=False)  # reports its difference itself
    assert audit.dropped == []


def test_the_original_method_is_restored_also_on_error():
    original = torch.nn.Module.load_state_dict
    try:
        with LoadAudit():
            assert torch.nn.Module.load_state_dict is not original
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.nn.Module.load_state_dict is original


def _line_of(marker: str) -> int:
    with open(__file__) as f:
        for number, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return number
    raise AssertionError(marker)
