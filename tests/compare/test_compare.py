"""compare(): the raw differences, before any explanation."""

import math

import pytest

import torch

from pytest_ckpt.checkpoint.view import View
from pytest_ckpt.compare.compare import broken_ties, compare
from pytest_ckpt.checkpoint.notes import Note

from .helpers import ckpt, model, state


def test_identical_is_ok():
    sd = state()
    d = compare(model(sd), ckpt({k: v.clone() for k, v in sd.items()}))
    assert d.ok and d.values_compared and d.notes == []
    assert d.expected_info["tensors"] == len(sd) and d.actual_info["label"] == "checkpoint"


def test_missing_unexpected_shape_dtype_values():
    e = {"a": torch.zeros(2), "b": torch.zeros(2), "c": torch.zeros(3), "d": torch.zeros(2),
         "v": torch.zeros(2)}
    a = {"b": torch.zeros(2), "c": torch.zeros(4), "d": torch.zeros(2, dtype=torch.float64),
         "v": torch.tensor([0.0, 0.25]), "z": torch.zeros(1)}
    d = compare(model(e), ckpt(a))
    assert d.missing == ["a"] and d.unexpected == ["z"]
    assert d.shape == {"c": ((3,), (4,))}
    assert d.dtype == {"d": (torch.float32, torch.float64)}
    assert d.values == {"v": 0.25}  # c and d are not value-compared
    assert not d.ok


def test_a_dtype_change_alone_is_a_difference():
    # values are compared only at equal dtypes: the dtype itself must fail the diff
    e = {"w": torch.ones(2), "b": torch.zeros(1)}
    d = compare(model(e), ckpt({"w": torch.ones(2, dtype=torch.float16), "b": torch.zeros(1)}))
    assert d.dtype == {"w": (torch.float32, torch.float16)} and d.values == {}
    assert not d.ok and d


def test_values_off_and_meta_sides():
    e, a = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    assert compare(model(e), ckpt(a), values=False).ok
    d = compare(model(e), ckpt({"w": torch.empty(2, device="meta")}))
    assert d.ok and not d.values_compared


def test_tolerance():
    e, a = {"w": torch.zeros(2)}, {"w": torch.full((2,), 1e-4)}
    assert compare(model(e), ckpt(a), atol=1e-3).ok
    assert compare(model(e), ckpt(a), rtol=1e-3).values == {"w": pytest.approx(1e-4)}


def test_exact_edge_values():
    nan = float("nan")
    e = {"n": torch.tensor([nan, 1.0]), "z": torch.tensor([0.0]), "u": torch.tensor([1.0])}
    a = {"n": torch.tensor([nan, 1.0]), "z": torch.tensor([-0.0]),
         "u": torch.nextafter(torch.tensor([1.0]), torch.tensor([2.0]))}
    d = compare(model(e), ckpt(a))
    assert set(d.values) == {"z", "u"} and d.values["z"] == 0.0
    d = compare(model({"n": torch.tensor([nan, 1.0])}), ckpt({"n": torch.tensor([1.0, nan])}))
    assert d.values == {"n": math.inf}


def test_ties_only_when_actual_can_express_them():
    w = torch.zeros(3)
    e = model({"a": w, "b": w}, ties=[("a", "b")])
    apart = {"a": torch.zeros(3), "b": torch.ones(3)}
    assert compare(e, ckpt(apart, ties=[])).ties == [("a", "b")]
    # copies that agree: a load re-ties them (nothing lost); a live module would not
    same = {"a": torch.zeros(3), "b": torch.zeros(3)}
    assert compare(e, ckpt(same, ties=[])).ok
    assert compare(e, ckpt(same, ties=[], module=torch.nn.Module())).ties == [("a", "b")]
    assert compare(e, ckpt(same, ties=None)).ok  # e.g. DCP: values alone
    assert compare(e, ckpt({"a": w, "b": w}, ties=[("a", "b")])).ok


def test_broken_ties_ignores_absent_names():
    assert broken_ties([("a", "b", "c")], [("a", "b")], {"a", "b"}) == []
    assert broken_ties([("a", "b", "c")], [("a", "b")], {"a", "b", "c"}) == [("a", "b", "c")]
    assert broken_ties([("a", "b")], [], {"a"}) == []


def test_config_from_views_or_argument():
    sd = {"w": torch.zeros(1)}
    d = compare(model(sd, config={"h": 1}), ckpt(sd, config={"h": 2}))
    assert d.config == {"h": (1, 2)} and d.ok  # explains only
    assert d.expected_info["config"] == {"h": 1}
    d = compare(model(sd), ckpt(sd), configs=({"h": 1}, {"h": 3}), config_strict=True)
    assert d.config == {"h": (1, 3)} and not d.ok
    assert [n.kind for n in d.notes] == ["config"]
    # a side left None in configs= falls back to the view's config
    d = compare(model(sd), ckpt(sd, config={"h": 4}), configs=({"h": 1}, None))
    assert d.config == {"h": (1, 4)}


def test_view_notes_pass_through_first():
    sd = {"w": torch.zeros(1)}
    prefix = Note("prefix", "stripped `module.`", info=True)
    nested = Note("nested", "weights found at trainer.var_wo_ddp", info=True)
    d = compare(model(sd, notes=[prefix]), ckpt({"w": torch.ones(1)}, notes=[nested]))
    assert d.notes[:2] == [prefix, nested] and d.notes[2].kind == "values"


def test_every_dtype_round_trip_has_no_false_alarm():
    dtypes = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.float16, torch.bfloat16, torch.float32, torch.float64,
              torch.float8_e4m3fn, torch.float8_e5m2]
    sd = {f"t.{i}": torch.tensor([0.0, -0.0, 1.0, float("nan")]).to(dt)
          for i, dt in enumerate(dtypes)}
    sd["scalar"] = torch.tensor(2.0)
    sd["empty"] = torch.zeros(0, 4)
    sd["strided"] = torch.arange(12.0).reshape(3, 4).t()
    copy = {k: v.clone() for k, v in sd.items()}
    assert compare(View.of_tensors("m", sd), View.of_tensors("c", copy)).ok


@pytest.mark.parametrize("kinds", [1, 5, 40], ids=lambda k: f"{k}-shapes")
def test_values_batched_by_schema_entry_agree_with_one_by_one(kinds):
    # compare() batches tensors by schema entry: one kind, a few (masks) and many (dict)
    from pytest_ckpt.compare.values import max_abs_diff

    torch.manual_seed(kinds)
    e, a = {}, {}
    for i in range(400):
        shape = (i % kinds + 1, 3)
        dtype = torch.float16 if i % 3 == 0 else torch.float32
        e[f"m.{i}.w"] = torch.randn(shape).to(dtype)
        a[f"m.{i}.w"] = e[f"m.{i}.w"].clone()
        if i % 37 == 0:
            a[f"m.{i}.w"].view(-1)[-1] += 1
    d = compare(model(e), ckpt(a))
    expected = {n: max_abs_diff(e[n], a[n]) for n in e if not torch.equal(e[n], a[n])}
    assert d.values == dict(sorted(expected.items())) and len(d.values) == 11
