"""One note per cause, with its fix: the exact wording people read in CI logs."""

import torch

from pytest_ckpt.compare.compare import compare
from pytest_ckpt.compare.diagnose import RULES, Context, diagnose
from pytest_ckpt.checkpoint.notes import Note
from pytest_ckpt.report.diff import CheckpointDiff

from .helpers import ckpt, model, state

LAYERS_16_VS_8 = ("model.layers.8-15.*: 8 blocks unexpected: the checkpoint has 16 blocks, "
                  "the model 8")


def kinds(d):
    return [n.kind for n in d.notes]


def test_layer_count_without_configs():
    d = compare(model(state(8)), ckpt(state(16)))
    assert kinds(d) == ["layer-count"]
    note = d.notes[0]
    assert note.text == LAYERS_16_VS_8
    assert note.fix == ("build the model with 16 blocks, or load a checkpoint saved from "
                        "the 8-block model")
    assert len(note.names) == 24 and set(note.names) == set(d.unexpected)


def test_layer_count_with_configs():
    d = compare(model(state(8)), ckpt(state(16)),
                configs=({"num_hidden_layers": 8, "hidden_size": 8},
                         {"num_hidden_layers": 16, "hidden_size": 8}))
    assert kinds(d) == ["layer-count"]  # the config note does not repeat the layer field
    assert d.notes[0].text == LAYERS_16_VS_8 + "; num_hidden_layers: 16 -> 8"
    assert d.notes[0].fix == ("build the model with num_hidden_layers=16, or load a checkpoint "
                              "saved from the 8-block config")


def test_layer_count_config_on_one_side_only():
    d = compare(model(state(8), config={"n_layer": 8}), ckpt(state(16)))
    assert d.notes[0].text == LAYERS_16_VS_8 + "; n_layer: 16 -> 8"
    # a config field that does not match the blocks is not quoted
    d = compare(model(state(8), config={"n_layer": 7, "heads": 8}), ckpt(state(16)))
    assert d.notes[0].text == LAYERS_16_VS_8


def test_layer_count_field_found_by_value():
    d = compare(model(state(8)), ckpt(state(16)),
                configs=({"encoder_layers": 8}, {"encoder_layers": 16}))
    assert d.notes[0].text.endswith("; encoder_layers: 16 -> 8")


def test_layer_count_reverse():
    d = compare(model(state(16)), ckpt(state(8)),
                configs=({"num_hidden_layers": 16}, {"num_hidden_layers": 8}))
    assert kinds(d) == ["layer-count"]
    assert d.notes[0].text == ("model.layers.8-15.*: blocks 8-15 missing: the model has 16 "
                               "blocks, the checkpoint 8; num_hidden_layers: 8 -> 16")


def test_one_block_fewer():
    d = compare(model(state(8)), ckpt(state(7)))
    assert d.notes[0].text.startswith("model.layers.7.*: block 7 missing")


def test_incomplete_tail_with_stored_config():
    full = state(16)
    cut = {k: v for k, v in full.items()
           if not k.startswith(("model.layers.1", "model.norm", "lm_head"))
           or k.startswith("model.layers.1.")}
    d = compare(model(full), ckpt(cut, config={"num_hidden_layers": 16}))
    # what is missing (the blocks), then why (the stored config says there were 16)
    assert kinds(d) == ["layer-count", "incomplete"]
    assert d.notes[0].text == ("model.layers.10-15.*: blocks 10-15 missing: the model has 16 "
                               "blocks, the checkpoint 10")
    assert d.notes[1].text == (
        "model.layers.10-15.*: the checkpoint ends at block 9 but its stored config says "
        "num_hidden_layers=16: likely an interrupted save (20 tensors absent)")
    assert "re-run the save" in d.notes[1].fix
    # without the stored config the same gap reads as a layer count
    assert kinds(compare(model(full), ckpt(cut))) == ["layer-count", "missing"]


def test_incomplete_inside_a_block():
    full = state(4)
    cut = dict(full)
    for k in ["model.layers.3.mlp.up.weight", "model.layers.3.norm.weight", "model.norm.weight",
              "lm_head.weight"]:
        del cut[k]
    d = compare(model(full), ckpt(cut, config={"num_hidden_layers": 4}))
    assert kinds(d) == ["incomplete"] and "ends inside block 3" in d.notes[0].text


def test_config_note_lists_fields():
    sd = state(2)
    d = compare(model(sd), ckpt(sd), configs=({"hidden_size": 32, "act": "gelu"},
                                              {"hidden_size": 64, "act": "silu"}),
                config_strict=True)
    assert [(n.kind, n.text, n.info) for n in d.notes] == [
        ("config", "config differs (checkpoint -> model): act: 'silu' -> 'gelu', "
                   "hidden_size: 64 -> 32", False)]
    d = compare(model(sd), ckpt(sd), configs=({"h": 1}, {"h": 2}))
    assert d.ok and d.notes[0].info


def test_shape_explained_by_config_field():
    d = compare(model(state(4, hidden=8)), ckpt(state(4, hidden=16)),
                configs=({"hidden_size": 8, "vocab": 10}, {"hidden_size": 16, "vocab": 10}))
    assert kinds(d) == ["shape"]
    assert d.notes[0].text == (
        f"{len(d.shape)} tensors differ in shape because hidden_size: 16 -> 8 "
        "(e.g. lm_head.weight: (10, 16) in the checkpoint, (10, 8) in the model)")


def test_shape_grouped_by_pattern_without_config():
    e, a = state(4), state(4)
    for i in range(4):
        a[f"model.layers.{i}.mlp.up.weight"] = torch.zeros(16, 8)
    a["lm_head.weight"] = torch.zeros(11, 8)
    d = compare(model(e), ckpt(a))
    assert [n.text for n in d.notes] == [
        "model.layers.0-3.mlp.up.weight: (16, 8) in the checkpoint, (32, 8) in the model "
        "(4 tensors)",
        "lm_head.weight: (11, 8) in the checkpoint, (10, 8) in the model (1 tensor)"]


def test_dtype_grouped():
    d = compare(model(state(4)), ckpt(state(4, dtype=torch.bfloat16)))
    assert kinds(d) == ["dtype"]
    assert d.notes[0].text == "15 tensors are bfloat16 in the checkpoint, float32 in the model"
    assert "model.to(torch.float32)" in d.notes[0].fix


def test_values_one_line():
    e, a = state(2), state(2)
    a = {k: v.clone() for k, v in e.items()}
    a["lm_head.weight"][0, 0] += 2
    a["model.norm.weight"][0] += 0.5
    d = compare(model(e), ckpt(a))
    assert [n.text for n in d.notes] == [
        "2 tensors differ in value (compared exactly): largest max-abs difference 2 at "
        "lm_head.weight"]
    zero = compare(model({"z": torch.tensor([0.0])}), ckpt({"z": torch.tensor([-0.0])}))
    assert "bits only" in zero.notes[0].text


def test_tied_broken():
    w = torch.zeros(3)
    d = compare(model({"a": w, "b": w}, ties=[("a", "b")]),
                ckpt({"a": torch.zeros(3), "b": torch.zeros(3)}, ties=[], module=torch.nn.Module()))
    assert kinds(d) == ["tied"] and d.notes[0].text.startswith("1 tie group broken: a = b")


def test_tied_copies_that_differ_name_the_copy_kept():
    w = torch.zeros(3)
    d = compare(model({"a": w, "b": w}, ties=[("a", "b")]),
                ckpt({"a": torch.zeros(3), "b": torch.full((3,), 0.5)}, ties=[]))
    assert d.tie_copies == {("a", "b"): (0.5, "b")}
    assert [n.text for n in d.notes if n.kind == "tied"] == [
        "a = b: one tensor in the model, but the checkpoint stores copies that differ (largest "
        "max-abs difference 0.5): load_state_dict keeps b (loaded last) and drops a"]


def test_renamed_prefix_and_leaf():
    e = state(2)
    a = {}
    for k, v in e.items():
        k = k.replace("model.", "transformer.", 1) if k.startswith("model.") else k
        a[k.replace(".norm.weight", ".norm.gamma")] = v
    d = compare(model(e), ckpt(a))
    assert kinds(d) == ["renamed"]
    text = d.notes[0].text
    assert text.startswith(f"{len(d.missing)} tensors have other names in the checkpoint")
    assert "`model.` -> `transformer.`" in text
    assert set(d.notes[0].names) == set(d.missing) | set(d.unexpected)


def test_plain_missing_and_unexpected_collapse():
    e = state(4)
    a = {k: v for k, v in e.items() if ".attn." not in k}
    a["extra.weight"] = torch.zeros(7, 7)
    d = compare(model(e), ckpt(a))
    assert [n.text for n in d.notes] == [
        "4 tensors missing from the checkpoint: model.layers.0-3.attn.q.weight",
        "1 tensor in the checkpoint has no place in the model: extra.weight"]


def test_rules_registry_is_extensible(monkeypatch):
    def custom(diff, expected, actual, ctx):
        return [Note("custom", f"{len(diff.missing)} missing")]

    monkeypatch.setattr("pytest_ckpt.compare.diagnose.RULES", RULES + [custom])
    d = CheckpointDiff(missing=["x"])
    notes = diagnose(d, model({"x": torch.zeros(1)}), ckpt({}), Context())
    assert [(n.kind, n.text) for n in notes][-1] == ("custom", "1 missing")


def test_renamed_found_past_crowded_neighbours():
    # The rename search looks first at the few names that sort next to a missing one (by
    # prefix and by suffix). Here those places are taken by decoys of the same shape, each
    # fitting one name only, so the search must widen to find ffn -> mlp for all ten.
    e = {f"blk.{i}.ffn.w": torch.zeros(2) for i in range(10)}
    a = {f"blk.{i}.mlp.w": torch.zeros(2) for i in range(10)}
    a.update({f"blk.{i}.ffn{c}{i}o.w": torch.zeros(2) for i in range(10) for c in "abcdefgh"})
    d = compare(model(e), ckpt(a))
    note = next(n for n in d.notes if n.kind == "renamed")
    assert note.text.startswith("10 tensors have other names in the checkpoint")
    assert "`.ffn` -> `.mlp` (10)" in note.text


# -- round trips: the sides have their own nouns, the fix names the code at fault ---------------

def test_one_block_is_said_in_the_singular():
    d = compare(model(state(2)), ckpt(state(1)))
    assert d.notes[0].text == ("model.layers.1.*: block 1 missing: the model has 2 blocks, the "
                               "checkpoint 1")
    assert d.notes[0].fix == ("build the model with 1 block, or load a checkpoint saved from the "
                              "2-block model")


def test_a_load_that_built_another_depth_gets_the_fix_in_the_load():
    built = model(state(3), expected_noun="model your load built", built="your load built",
                  made_by="load")
    d = compare(built, ckpt(state(4)), configs=(None, {"n_layer": 4}))
    assert d.notes[0].text == ("model.layers.3.*: 1 block unexpected: the checkpoint has 4 blocks, "
                               "your load built 3; n_layer: 4 -> 3")
    assert d.notes[0].fix == "build the model in your load with n_layer=4, as training does"


def test_a_reloaded_model_that_differs_is_the_loads_doing():
    saved = model(state(2), expected_noun="saved model")
    reloaded = ckpt(state(2, dtype=torch.float16), noun="reloaded model", made_by="load")
    d = compare(saved, reloaded)
    assert d.notes[0].text.startswith("9 tensors are float16 in the reloaded model, float32 in "
                                      "the saved model")
    assert d.notes[0].fix.startswith("your load casts them to float16 (.half(), .to(), a "
                                     "torch_dtype=): keep float32, or declare the cast once with "
                                     "ckpt.roundtrip(..., dtype=torch.float16)")
    d = compare(saved, ckpt(state(1), noun="reloaded model", made_by="load"))
    assert "the saved model has 2 blocks, the reloaded model 1" in d.notes[0].text
    assert d.notes[0].fix == "build the model in your load with 2 blocks, as training does"


def test_a_file_that_lacks_tensors_is_the_saves_doing():
    full = state(1)
    written = {k: v for k, v in full.items() if not k.endswith("norm.weight")}
    d = compare(model(full, expected_noun="saved model"), ckpt(written, made_by="save"))
    assert [n.kind for n in d.notes] == ["missing"]
    assert d.notes[0].text.startswith("2 tensors missing from the checkpoint: ")
    assert d.notes[0].fix.startswith("your save must write them")
