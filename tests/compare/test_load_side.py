"""Causes on the load side seen in the values: a round trip through float16/bfloat16 (a cast,
and which side did it), tensors still as a fresh module holds them (a load that skipped them),
and a load that matched no name because the file's names carry a wrapper prefix."""

import pytest
import torch
from torch import nn

import pytest_ckpt as pc
from pytest_ckpt.checkpoint.resolve import module_view, resolve


class Tower(nn.Module):
    """Shaped like Chinese-CLIP's towers: linear and conv weights, attention, norms, a projection."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 2)
        self.attn = nn.MultiheadAttention(8, 2)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.text_projection = nn.Parameter(torch.randn(8, 4))


def convert_weights(model: nn.Module):
    """Chinese-CLIP's ``convert_weights``: the applicable parameters to float16, norms left alone."""
    def to_fp16(layer):
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            layer.weight.data = layer.weight.data.half()
            if layer.bias is not None:
                layer.bias.data = layer.bias.data.half()
        if isinstance(layer, nn.MultiheadAttention):
            for attr in ["in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                         "in_proj_bias", "bias_k", "bias_v"]:
                tensor = getattr(layer, attr)
                if tensor is not None:
                    tensor.data = tensor.data.half()
        for name in ["text_projection", "proj"]:
            attr = getattr(layer, name, None)
            if isinstance(attr, torch.Tensor):
                attr.data = attr.data.half()

    model.apply(to_fp16)


def trained(seed=0):
    torch.manual_seed(seed)
    model = Tower()
    with torch.no_grad():  # trained: no tensor holds its initial values any more
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def load_from_name(path):
    """Chinese-CLIP's load_from_name on a CPU: build, convert to fp16, load, back to float."""
    model = Tower()
    convert_weights(model)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.float()


def round_trip(saved, reloaded, *, read_from=None, fresh=None):
    """The two sides as a round trip sees them: the saved model, and what the project's load
    returned (its differences are the load's doing)."""
    expected = module_view(saved, label="the saved model (Tower)")
    expected.expected_noun = "saved model"
    actual = module_view(reloaded, label="the reloaded model (Tower)")
    actual.noun, actual.expected_noun, actual.made_by = "reloaded model", "reloaded model", "load"
    actual.read_from, actual.fresh = read_from, fresh
    return pc.diff(expected, actual)


def causes(d):
    return [n for n in d.notes if not n.info]


# -- casts ------------------------------------------------------------------------------------

def test_a_load_that_rounds_through_float16_is_a_load_side_cast(tmp_path):
    saved = trained()
    torch.save(saved.state_dict(), tmp_path / "clip.pt")
    d = round_trip(saved, load_from_name(tmp_path / "clip.pt"))
    assert [n.kind for n in causes(d)] == ["cast"], str(d)
    names = "attn.in_proj_bias, attn.in_proj_weight, attn.out_proj.bias, attn.out_proj.weight and 5 more"
    assert causes(d)[0].text == (
        f"the reloaded model's values are the saved model's rounded to float16 (9 tensors: {names}; "
        "every difference is that rounding): a cast on the load side")
    assert causes(d)[0].fix.startswith("your load rounds the weights through float16 (.half() or "
                                       ".to(torch.float16) and back, e.g. a convert_weights() for "
                                       "inference): keep them in float32")
    assert "strict=False" not in str(d) and "buffer" not in str(d)
    assert {"ln.weight", "ln.bias"}.isdisjoint(d.values)  # left alone by convert_weights
    # the tolerance the fix offers accepts exactly this rounding
    reloaded = load_from_name(tmp_path / "clip.pt")
    assert pc.diff(saved, reloaded, rtol=1e-3, atol=1e-7).ok


def test_a_file_holding_rounded_values_is_a_save_side_cast_and_bfloat16_is_told_apart(tmp_path):
    saved = trained()
    path = tmp_path / "half.pt"
    torch.save({k: v.bfloat16().float() for k, v in saved.state_dict().items()}, path)
    expected = module_view(saved, label="the saved model (Tower)")
    expected.expected_noun = "saved model"
    file = resolve(path, values=True, like=expected, label="the checkpoint (half.pt)")
    file.made_by = "save"
    d = pc.diff(expected, file)
    assert [n.kind for n in causes(d)] == ["cast"]
    assert "the checkpoint's values are the saved model's rounded to bfloat16" in causes(d)[0].text
    assert causes(d)[0].text.endswith("every difference is that rounding): a cast on the save side")
    assert causes(d)[0].fix.startswith("your save rounds the weights through bfloat16 (.bfloat16() or "
                                       ".to(torch.bfloat16) and back before saving)")
    # outside a round trip: no side is blamed, and the bfloat16 tolerance accepts it
    plain = pc.diff(saved, path)
    assert causes(plain)[0].text.endswith("rounding): a cast to bfloat16 and back between them")
    assert pc.diff(saved, path, rtol=8e-3).ok


@pytest.mark.parametrize("change", ["one-ulp", "noise"])
def test_a_change_that_is_no_rounding_is_not_called_a_cast(change):
    saved = trained()
    sd = {k: v.detach().clone() for k, v in saved.state_dict().items()}
    w = sd["fc.weight"]
    if change == "one-ulp":
        w.view(torch.int32)[0, 0] += 1
    else:
        w += 1e-4 * torch.randn_like(w)
    d = pc.diff(saved, sd)
    assert [n.kind for n in causes(d)] == ["values"] and "fc.weight" in causes(d)[0].text


def test_a_value_or_two_that_happen_to_be_bfloat16_numbers_are_no_cast():
    # 1000.0 is 1000.5 rounded to bfloat16, by chance: one value is no evidence of a cast
    d = pc.diff({"scale": torch.tensor([1000.0, 3.0])}, {"scale": torch.tensor([1000.5, 3.0])})
    assert [n.kind for n in causes(d)] == ["values"]


# -- tensors a load skipped ---------------------------------------------------------------------

def test_a_strict_false_load_that_drops_the_norm_says_the_reloaded_norm_is_a_fresh_init(tmp_path):
    saved = trained()
    torch.save(saved.state_dict(), tmp_path / "m.pt")
    reloaded = Tower()
    sd = torch.load(tmp_path / "m.pt", weights_only=True)
    reloaded.load_state_dict({k: v for k, v in sd.items() if not k.startswith("ln.")}, strict=False)
    d = round_trip(saved, reloaded)
    assert [(n.kind, n.text) for n in causes(d)] == [(
        "values", "the reloaded model's ln.bias, ln.weight hold 1.0 or 0.0 everywhere, as freshly "
                  "built modules do, where the saved model's do not: your load did not copy them")]
    assert causes(d)[0].fix.startswith("your load must copy them: a load_state_dict(..., strict=False) "
                                       "skips every name it does not match")
    # outside a round trip no code is at fault: two models, one at its init, differ in value
    assert [n.kind for n in causes(pc.diff(Tower(), saved))] == ["values"]
    # one element changed in a norm still at 1.0 is a changed value, not a load that skipped it
    torch.manual_seed(3)
    at_init = Tower()
    saved_one = Tower()
    saved_one.load_state_dict(at_init.state_dict())
    with torch.no_grad():
        saved_one.ln.weight[0] += 1e-3
    assert [n.text[:31] for n in causes(round_trip(saved_one, at_init))] == [
        "1 tensor differs in value (comp"]
    # a saved tensor that holds one value too (a scale set to 0.5 on purpose) tells no init apart
    with torch.no_grad():
        saved.ln.weight.fill_(0.5)
    assert [n.kind for n in causes(round_trip(saved, reloaded))] == ["values", "values"]
    assert "ln.weight" in causes(round_trip(saved, reloaded))[1].text


def test_tensors_equal_to_the_fresh_model_are_ones_the_load_skipped():
    saved = trained()
    torch.manual_seed(7)
    fresh = Tower()
    torch.manual_seed(7)
    reloaded = Tower()  # the same fresh init: the load copied nothing into fc
    reloaded.load_state_dict({k: v for k, v in saved.state_dict().items() if not k.startswith("fc.")},
                             strict=False)
    d = round_trip(saved, reloaded, fresh=fresh.state_dict())
    assert [n.text for n in causes(d)] == [
        "the reloaded model's fc.bias, fc.weight equal a freshly built model's, where the saved "
        "model's do not: your load did not copy them"]
    # without the fresh model, random initial values are not evidence of anything: only a
    # difference in value is said
    assert [n.kind for n in causes(round_trip(saved, reloaded))] == ["values"]
    assert "fresh" not in str(round_trip(saved, reloaded))


def test_a_load_that_leaves_the_wrapper_prefix_on_matched_no_name(tmp_path):
    saved = trained()
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in saved.state_dict().items()}, path)
    reloaded = Tower()
    reloaded.load_state_dict(torch.load(path, weights_only=True), strict=False)  # matches nothing
    expected = module_view(saved)
    file = resolve(path, values=False, like=expected, label="the checkpoint (ddp.pt)")
    d = round_trip(saved, reloaded, read_from=file)
    first = causes(d)[0]
    assert len(causes(d)) == 1 and first.kind == "prefix"
    assert first.text == ("every name in the checkpoint (ddp.pt) starts with module. (DataParallel/DDP) "
                          f"and no tensor of the reloaded model holds the saved model's values "
                          f"({len(d.values)} differ): your load leaves module. on, so it matched no name")
    assert first.fix.startswith("strip module. in your load")
    # a load that copied some tensors: the prefix is not why the others differ
    reloaded.fc.load_state_dict(saved.fc.state_dict())
    assert "[prefix]" not in str(round_trip(saved, reloaded, read_from=file))
