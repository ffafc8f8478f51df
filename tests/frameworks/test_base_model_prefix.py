"""transformers' base_model_prefix: a LlamaModel checkpoint read into LlamaForCausalLM and back.
The target decides: the prefix is undone (an info note), the head one side lacks is its own cause."""

from __future__ import annotations

import pytest
import torch

import pytest_ckpt as pc

transformers = pytest.importorskip("transformers", reason="the base_model_prefix cases need transformers")


def _config(**kw):
    fields = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaConfig(**{**fields, **kw})


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = _config(tie_word_embeddings=False)
    base, lm = transformers.LlamaModel(cfg), transformers.LlamaForCausalLM(cfg)
    d = tmp_path_factory.mktemp("llama")
    torch.save(base.state_dict(), d / "base.pt")
    torch.save(lm.state_dict(), d / "lm.pt")
    return cfg, base, lm, d


def _causes(diff):
    return [n for n in diff.notes if not n.info]


def test_a_base_checkpoint_into_the_model_with_a_head_names_only_the_head(llama):
    cfg, base, _, d = llama
    diff = pc.diff(transformers.LlamaForCausalLM(cfg), d / "base.pt", values=False)
    assert not diff.ok and diff.missing == ["lm_head.weight"] and diff.unexpected == []
    [cause] = _causes(diff)
    assert cause.kind == "missing" and cause.text.startswith(
        "the checkpoint holds only the base model (what the model keeps as .model)")
    assert "expect_missing=['lm_head']" in cause.fix
    [prefix] = [n for n in diff.notes if n.kind == "prefix"]
    assert prefix.info and prefix.text.startswith("attribute prefix model. added to every name")
    assert "[renamed]" not in str(diff)
    # the head trained from scratch: declared, loaded, and the base weights are the checkpoint's
    lm = transformers.LlamaForCausalLM(cfg)
    assert pc.load_into(lm, d / "base.pt", expect_missing=["lm_head"]).ok
    assert pc.diff(base, lm.model).ok


def test_a_whole_model_checkpoint_into_its_base_names_only_the_head(llama):
    cfg, _, lm, d = llama
    diff = pc.diff(transformers.LlamaModel(cfg), d / "lm.pt", values=False)
    assert diff.unexpected == ["lm_head.weight"] and diff.missing == []
    [cause] = _causes(diff)
    assert cause.kind == "unexpected" and "holds a head beside the base model" in cause.text
    [prefix] = [n for n in diff.notes if n.kind == "prefix"]
    assert "removed from every name but lm_head.weight" in prefix.text and prefix.info
    base = transformers.LlamaModel(cfg)
    report = pc.load_into(base, d / "lm.pt", strict=False)
    assert report.stripped == ("model.",) and pc.diff(lm.model, base).ok


def test_live_models_either_way_round(llama):
    _, base, lm, _ = llama
    assert [n.kind for n in _causes(pc.diff(lm, base, values=False))] == ["missing"]
    assert [n.kind for n in _causes(pc.diff(base, lm, values=False))] == ["unexpected"]


def test_save_pretrained_with_tied_embeddings_loads_into_the_base_model(tmp_path):
    transformers.logging.set_verbosity_error()
    cfg = _config(tie_word_embeddings=True)
    lm = transformers.LlamaForCausalLM(cfg)
    lm.save_pretrained(tmp_path)  # the tied lm_head.weight is not written: every key carries model.
    base = transformers.LlamaModel(cfg)
    report = pc.load_into(base, tmp_path / "model.safetensors")
    assert report.ok and [n.kind for n in report.diff.notes] == ["prefix"]
    assert pc.diff(lm.model, base).ok
    # and the base checkpoint into the tied model: the tie fills the head, nothing is missing
    torch.save(base.state_dict(), tmp_path / "base.pt")
    assert pc.load_into(transformers.LlamaForCausalLM(cfg), tmp_path / "base.pt").ok


def test_a_real_drift_under_the_prefix_is_named_as_the_drift(llama):
    cfg, _, _, d = llama
    bigger = transformers.LlamaForCausalLM(_config(tie_word_embeddings=False, num_hidden_layers=3))
    diff = pc.diff(bigger, d / "base.pt", values=False)
    kinds = [n.kind for n in _causes(diff)]
    assert "layer-count" in kinds and "renamed" not in kinds, str(diff)
