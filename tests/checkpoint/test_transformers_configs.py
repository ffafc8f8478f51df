"""transformers 5 configs (dataclasses whose declared fields are not all of the config), tiny
GPT-2 / Llama / Qwen3 sizes, no weights downloaded: configs explain in their own terms, a real
change fails pc.load_into(config=), and a correct project raises no alarm."""

from __future__ import annotations

import pytest

import pytest_ckpt as pc
from pytest_ckpt.checkpoint.configs import config_fields_diff, config_to_dict, layer_field

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SIZE = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=64, max_position_embeddings=32)
FAMILIES = {
    # name: (config class, model class, its layer field, kwargs)
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", "n_layer",
             dict(n_embd=16, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", "num_hidden_layers", SIZE),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "num_hidden_layers", dict(SIZE, head_dim=8)),
}


def build(family: str, layers: int = 2, **changes):
    cfg_cls, model_cls, field, kw = FAMILIES[family]
    config = getattr(transformers, cfg_cls)(**{**kw, field: layers, **changes})
    return config, getattr(transformers, model_cls)(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_to_dict_keeps_the_whole_config(family):
    config, _ = build(family)
    field = FAMILIES[family][2]
    d = config_to_dict(config)
    assert d[field] == 2 and layer_field(d) == field
    assert d["vocab_size"] == 64
    if family != "gpt2":  # rope lives in a nested dict in transformers 5
        assert d["rope_parameters"]["rope_theta"] == 10000.0


@pytest.mark.parametrize("family", FAMILIES)
def test_configs_explain_a_depth_change_in_config_terms(family, tmp_path):
    field = FAMILIES[family][2]
    saved_cfg, saved = build(family, layers=2)
    path = pc.save(saved, tmp_path / "model.safetensors", config=saved_cfg)
    cfg3, model3 = build(family, layers=3)
    d = pc.diff(model3, path, values=False, configs=(cfg3, saved_cfg))
    (cause,) = [n for n in d.notes if not n.info]
    assert cause.kind == "layer-count" and cause.text.endswith(f"; {field}: 2 -> 3"), str(d)
    assert f"build the model with {field}=2" in cause.fix


@pytest.mark.parametrize("family, change", [
    ("llama", dict(rope_theta=1e6)), ("qwen3", dict(rope_theta=1e6)),
    ("gpt2", dict(activation_function="relu")),
])
def test_load_into_with_config_fails_on_a_real_change(family, change, tmp_path):
    saved_cfg, saved = build(family)
    path = pc.save(saved, tmp_path / "model.pt", config=saved_cfg)
    cfg, model = build(family, **change)  # same weights' shapes, another model
    with pytest.raises(pc.CheckpointMismatch) as info:
        pc.load_into(model, path, config=cfg)
    (note,) = [n for n in info.value.diff.notes if n.kind == "config"]
    field = "rope_parameters.rope_theta" if "rope_theta" in change else "activation_function"
    assert field in note.text and not note.info


@pytest.mark.parametrize("family", FAMILIES)
def test_a_correct_project_passes_whatever_transformers_filled_in(family, tmp_path):
    # the project saves what from_pretrained gave it (architectures, dtype filled in), and
    # later loads into a model built from a fresh config: the same model
    cfg, model = build(family)
    model.save_pretrained(tmp_path / "hf")
    pretrained = type(model).from_pretrained(tmp_path / "hf")
    assert config_fields_diff(config_to_dict(pretrained.config), config_to_dict(cfg)) == {}
    path = pc.save(pretrained, tmp_path / "model.pt", config=pretrained.config)
    fresh_cfg, fresh = build(family)
    fresh_cfg.use_cache = False  # a runtime switch, not the model
    assert pc.load_into(fresh, path, config=fresh_cfg).ok
    assert pc.diff(pretrained, fresh).ok


def test_nested_sub_configs_are_compared_field_by_field(tmp_path):
    text = transformers.LlamaConfig(num_hidden_layers=2, **SIZE)
    config = transformers.LlavaConfig(text_config=text.to_dict())
    d = config_to_dict(config)
    assert d["text_config"]["num_hidden_layers"] == 2 and isinstance(d["vision_config"], dict)
    _, model = build("llama")
    path = pc.save(model, tmp_path / "model.pt", config=config)
    changed = transformers.LlavaConfig(text_config=transformers.LlamaConfig(
        num_hidden_layers=2, rope_theta=1e6, **SIZE).to_dict())
    with pytest.raises(pc.CheckpointMismatch, match=r"text_config\.rope_parameters\.rope_theta"):
        pc.load_into(model, path, config=changed)
    assert pc.load_into(model, path, config=transformers.LlavaConfig(text_config=text.to_dict())).ok


def test_a_projects_own_pretrained_config_is_read_in_full(tmp_path):
    # minimind's MiniMindConfig(PretrainedConfig): fields set in __init__, not declared
    import dataclasses

    from tests.minimind_config import MiniMind, MiniMindConfig

    config = MiniMindConfig()
    assert dataclasses.is_dataclass(config)
    assert "num_hidden_layers" not in {f.name for f in dataclasses.fields(config)}
    d = config_to_dict(config)
    assert (d["num_hidden_layers"], d["rope_theta"]) == (2, 1e6) and layer_field(d) == "num_hidden_layers"
    path = pc.save(MiniMind(config), tmp_path / "minimind.pt", config=config)
    with pytest.raises(pc.CheckpointMismatch, match=r"rope_theta: 1000000\.0 -> 10000\.0"):
        pc.load_into(MiniMind(MiniMindConfig(rope_theta=1e4)), path, config=MiniMindConfig(rope_theta=1e4))
    deeper = MiniMindConfig(num_hidden_layers=3)
    d = pc.diff(MiniMind(deeper), path, values=False)  # the model's own .config explains it
    assert "num_hidden_layers: 2 -> 3" in str(d)
    assert pc.load_into(MiniMind(MiniMindConfig()), path, config=MiniMindConfig()).ok
