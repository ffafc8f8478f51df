"""The report a person reads in CI, and its JSON twin."""

import json

import torch

from pytest_ckpt.checkpoint.schema import Schema, TensorSpec
from pytest_ckpt.checkpoint.view import View
from pytest_ckpt.compare.compare import compare as compare_views
from pytest_ckpt.checkpoint.notes import Note
from pytest_ckpt.report.diff import CheckpointDiff
from pytest_ckpt.report.json import diff_to_dict
from pytest_ckpt.report.text import render

from ..compare.helpers import ckpt, model, state


def compare(*args, **kw) -> CheckpointDiff:
    """The comparison with its report, as pc.diff returns it."""
    return CheckpointDiff.of(compare_views(*args, **kw))


def test_layer_count_report_exact():
    d = compare(model(state(8)), ckpt(state(16)),
                configs=({"num_hidden_layers": 8}, {"num_hidden_layers": 16}))
    assert str(d).splitlines() == [
        "checkpoint differs from model: 24 unexpected (1 cause)",
        "  [layer-count] model.layers.8-15.*: 8 blocks unexpected: the checkpoint has 16 "
        "blocks, the model 8; num_hidden_layers: 16 -> 8",
        "      fix: build the model with num_hidden_layers=16, or load a checkpoint saved "
        "from the 8-block config",
    ]


def test_layer_count_report_without_configs():
    lines = str(compare(model(state(8)), ckpt(state(16)))).splitlines()
    assert lines[1] == ("  [layer-count] model.layers.8-15.*: 8 blocks unexpected: the "
                        "checkpoint has 16 blocks, the model 8")


def test_ok_verdict_names_what_was_normalized():
    sd = state(2)
    schema = Schema.of(sd, located_at=("trainer", "var_wo_ddp"), stripped=("module.",))
    actual = View("ckpt.pt", schema, dict(sd), has_values=True, notes=[
        Note("prefix", "stripped `module.` from 8 names", info=True),
        Note("nested", "weights found at trainer.var_wo_ddp", info=True)])
    d = compare(model(sd), actual)
    assert d.ok
    assert str(d).splitlines() == [
        "ok: 9 tensors match exactly (stripped module.; found at trainer.var_wo_ddp)",
        "  [prefix] stripped `module.` from 8 names",
        "  [nested] weights found at trainer.var_wo_ddp",
    ]
    assert str(compare(model(sd), ckpt(sd), atol=1e-3)).startswith(
        "ok: 9 tensors match within atol=0.001, rtol=0")


def test_info_notes_come_after_problems():
    d = compare(model(state(2)), ckpt(state(3), notes=[Note("prefix", "stripped", info=True)]))
    lines = str(d).splitlines()
    assert lines[1].startswith("  [layer-count]") and lines[-1] == "  [prefix] stripped"


def test_verbose_lists_every_name():
    d = compare(model(state(8)), ckpt(state(16)))
    text = d.report(verbose=True)
    assert "unexpected (24):" in text and "  model.layers.15.norm.weight" in text


def test_to_dict_is_json_ready():
    w = torch.zeros(3)
    e = model({"a": w, "b": w, "s": torch.zeros(2), "t": torch.zeros(2), "n": torch.zeros(1)},
              ties=[("a", "b")], config={"h": 1})
    a = ckpt({"a": torch.zeros(3), "b": torch.ones(3), "s": torch.zeros(3),
              "t": torch.zeros(2, dtype=torch.bfloat16), "n": torch.tensor([float("nan")]),
              "x": torch.zeros(1)}, ties=[], config={"h": 2, "new": 1})
    out = diff_to_dict(compare(e, a))
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert back["ok"] is False
    assert back["shape"] == {"s": {"expected": [2], "actual": [3]}}
    assert back["dtype"] == {"t": {"expected": "float32", "actual": "bfloat16"}}
    assert back["values"] == {"b": 1.0, "n": "inf"}
    assert back["ties"] == [["a", "b"]] and back["unexpected"] == ["x"]
    assert back["tie_copies"] == [{"names": ["a", "b"], "max_abs_diff": 1.0, "kept": "b"}]
    assert back["config"]["new"] == {"expected": "<absent>", "actual": 1}
    assert back["counts"]["shape"] == 1 and back["expected_info"]["tensors"] == 5
    assert {n["kind"] for n in back["notes"]} >= {"shape", "dtype", "values", "tied"}
    assert back["report"].startswith("checkpoint differs from model")


def test_empty_diff_renders():
    assert render(CheckpointDiff()).startswith("ok: 0 tensors")


def test_200k_names_1000_differences_under_40_lines():
    # names only: shared meta tensors keep this fast
    m8, m16 = torch.empty(8, device="meta"), torch.empty(16, device="meta")
    shapes = [torch.empty(k, device="meta") for k in range(9, 30)]
    mb = torch.empty(8, device="meta", dtype=torch.bfloat16)
    names = [f"model.layers.{i}.block.{j}.weight" for i in range(2000) for j in range(100)]
    expected = dict.fromkeys(names, m8)
    actual = dict(expected)
    for k, name in enumerate(names[::200]):
        kind = k % 5
        if kind == 0:
            del actual[name]
        elif kind == 1:
            actual[name.replace("block", "blk")] = m16
        elif kind == 2:
            actual[name] = m16
        elif kind == 3:
            actual[name] = shapes[k % len(shapes)]  # many shape patterns
        else:
            actual[name] = mb
    d = compare(View.of_tensors("model", expected), View.of_tensors("checkpoint", actual))
    counts = diff_to_dict(d)["counts"]
    assert sum(counts.values()) == 1000
    lines = str(d).splitlines()
    assert len(lines) < 40, "\n".join(lines)
    assert all(len(line) < 420 for line in lines)
    assert lines[0].startswith("checkpoint differs from model: 200 missing, 200 unexpected")
