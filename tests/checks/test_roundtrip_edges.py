"""The round trip's edge cases, as library calls on the shapes real projects showed: a declared cast,
the texts of a failure (which side is at fault, what it says first), arguments given the wrong way."""

from __future__ import annotations

import pytest
import torch

import pytest_ckpt as pc
from tests.checks import crash_savers as savers


# -- a declared cast (minimind: .half() weights, loaded into its float32 model) ----------------------

def test_a_declared_cast_is_honoured_by_the_default_load(tmp_path):
    report = pc.check_roundtrip(savers.MiniMind, save=savers.save_half_atomic, dtype=torch.float16,
                                workdir=tmp_path)
    assert report.ok, str(report)
    assert report.reloaded.lm_head.weight.dtype == torch.float32  # the model keeps its own dtype
    with pytest.raises(pc.CheckpointMismatch, match=r"\): \[dtype\] 8 tensors are float16 in the checkpoint"):
        pc.check_roundtrip(savers.MiniMind, save=savers.save_half_atomic, workdir=tmp_path / "undeclared")


def save_half_then_nudge(model, path):
    """A save that casts as declared and also changes one value: the cast must hide nothing else."""
    state = {k: v.half() for k, v in model.state_dict().items()}
    state["norm.weight"][0] += 1
    torch.save(state, path)


def test_a_declared_cast_hides_no_other_change(tmp_path):
    with pytest.raises(pc.CheckpointMismatch, match=r"\): \[values\] 1 tensor differs .* at norm\.weight\n"):
        pc.check_roundtrip(savers.MiniMind, save=save_half_then_nudge, dtype=torch.float16, workdir=tmp_path)


# -- which side is at fault, said first and once --------------------------------------------------

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(32, 8)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(2))
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 32, bias=False)


def save_half_float(model, path):
    """Rounds every weight through float16 and back: the file, not the load, is wrong."""
    torch.save({k: v.half().float() for k, v in model.state_dict().items()}, path)


def save_one_ulp_off(model, path):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    w = state["layers.0.weight"]
    state["layers.0.weight"] = torch.nextafter(w, torch.full_like(w, 10))
    torch.save(state, path)


def load_lenient(path):
    model = Net()
    model.load_state_dict(torch.load(path, weights_only=True), strict=False)
    return model


def load_without_norm(path):
    model = Net()
    state = torch.load(path, weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("norm.")}, strict=False)
    return model


def failure(**kw) -> list[str]:
    with pytest.raises(pc.CheckpointMismatch) as info:
        pc.check_roundtrip(Net, **kw)
    return str(info.value).splitlines()


def test_a_save_that_rounds_through_float16_is_blamed_on_the_save_only(tmp_path):
    lines = failure(save=save_half_float, workdir=tmp_path)
    assert lines[0].endswith("): [cast] the checkpoint's values are the saved model's rounded to float16 (8 tensors: "
                             "embed.weight, head.weight, layers.0-1.*, norm.bias and 1 more; every difference is "
                             "that rounding): a cast on the save side")
    assert lines[-1] == ("and so the reloaded model (Net) differs from the saved model (Net): 8 values, as the "
                         "checkpoint holds them (no cause of the load's own)")
    assert not [line for line in lines if "load side" in line or "your load" in line]


def test_a_one_ulp_change_in_the_save_gets_no_fix_for_the_load(tmp_path):
    lines = failure(save=save_one_ulp_off, workdir=tmp_path)
    assert "[values] 1 tensor differs in value (compared exactly)" in lines[0]
    assert [line.strip() for line in lines if "fix:" in line] == [
        "fix: your save writes other values than the model it is given holds (a copy taken earlier, or a lossy "
        "cast): save model.state_dict() as it is"]


def test_a_wrong_file_and_a_load_that_skips_tensors_show_both_causes(tmp_path):
    lines = failure(save=save_half_float, load=load_without_norm, workdir=tmp_path)
    assert "a cast on the save side" in lines[0]
    at = lines.index("and so the reloaded model (Net) differs from the saved model (Net): 8 values; and your load "
                     "changes what the checkpoint holds:")
    assert lines[at + 1] == ("  [values] the reloaded model's norm.bias, norm.weight equal a freshly built model's, "
                             "where the checkpoint's do not: your load did not copy them")


def test_a_strict_false_load_that_leaves_the_module_prefix_on_leads_with_the_prefix(tmp_path):
    lines = failure(variation="dataparallel", load=load_lenient, workdir=tmp_path)
    assert lines[0].endswith("): [prefix] every name in the checkpoint (model.pt) starts with module. (DataParallel/DDP) "
                             "and no tensor of the reloaded model holds the saved model's values (8 differ): your "
                             "load leaves module. on, so it matched no name")


def test_a_strict_false_load_that_skips_the_norm_says_the_reloaded_tensors_are_freshly_built(tmp_path):
    lines = failure(load=load_without_norm, workdir=tmp_path)
    assert lines[0].endswith("): [values] the reloaded model's norm.bias, norm.weight equal a freshly built "
                             "model's, where the saved model's do not: your load did not copy them")


# -- the project's save given what the round trip hands it ----------------------------------------

def save_path_first(path, model):
    torch.save(model.state_dict(), path)


class Pretrained(Net):
    """A model with its own save_pretrained, as transformers' models have (DDP does not forward it)."""

    def save_pretrained(self, path):
        torch.save(self.state_dict(), path)


def save_pretrained(model, path):
    model.save_pretrained(path)


def test_a_save_that_takes_the_path_first_is_named_with_the_fix(tmp_path):
    with pytest.raises(TypeError) as info:
        pc.check_roundtrip(Net, save=save_path_first, workdir=tmp_path)
    assert str(info.value) == (
        "ckpt-plain: your save tests.checks.test_roundtrip_edges.save_path_first(path, model) called "
        ".state_dict() on the path: the round trip calls save(model, path), the model first; fix: take "
        "(model, path) in your save, or pass save=lambda model, path: "
        "tests.checks.test_roundtrip_edges.save_path_first(path, model)")


def test_save_pretrained_on_the_ddp_wrapper_is_named_with_the_fix(tmp_path):
    with pytest.raises(TypeError) as info:
        pc.check_roundtrip(Pretrained, variation="ddp", save=save_pretrained, workdir=tmp_path)
    assert str(info.value) == (
        "ckpt-ddp: your save tests.checks.test_roundtrip_edges.save_pretrained(model, path) called "
        ".save_pretrained() on the DistributedDataParallel the ddp variation hands it, and DistributedDataParallel "
        "has no save_pretrained: it wraps your model; fix: call it on the model inside "
        "(model.module.save_pretrained(...), or accelerate's unwrap_model(model)), as a save from a wrapped "
        "training run must")
    assert isinstance(info.value.__cause__, AttributeError)  # the project's own error stays its cause
