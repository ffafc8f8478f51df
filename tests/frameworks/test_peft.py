"""Real PEFT LoRA adapters on a tiny Llama: an adapter round-trips with only=, and each way an
adapter fails to do what was trained is named: keys that match nothing, a no-op adapter
(lora_B all zeros), a merged checkpoint that still carries the adapter."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import pytest_ckpt as pc

transformers = pytest.importorskip("transformers", reason="the adapter cases need transformers")
peft = pytest.importorskip("peft", reason="the adapter cases need the peft extra "
                                          "(pip install pytest-ckpt[peft])")

LORA = "*lora_*"


def llama(seed: int = 0):
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))


def with_adapter(seed: int = 0, *, trained: bool = True):
    # init_lora_weights=False: lora_B random, as after training (peft starts it at zeros)
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=not trained)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(llama(seed), config)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    model = with_adapter()
    directory = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(directory)
    return model, directory / "adapter_model.safetensors"


def _causes(diff):
    return [n for n in diff.notes if not n.info]


def test_an_adapter_file_matches_its_model_with_only(adapter):
    model, path = adapter
    diff = pc.diff(model, path, only=LORA)
    assert diff.ok, str(diff)
    assert str(diff).splitlines()[0] == "ok: 8 tensors match exactly"
    assert [n.kind for n in diff.notes] == ["prefix", "only"]
    assert diff.notes[1].text == (f"only=['{LORA}']: compared 8 of 29 tensors of model (PeftModel) "
                                  f"and 8 of 8 tensors of {path}")
    assert not pc.diff(model, path).ok  # without only=, the frozen base is missing from the file
    with pytest.raises(ValueError, match=r"only=\['\*dora_\*'\] matches no tensor"):
        pc.diff(model, path, only="*dora_*")


def test_load_into_with_only_loads_the_adapter(adapter):
    model, path = adapter
    fresh = with_adapter(seed=1, trained=False)
    assert pc.load_into(fresh, path, only=LORA).ok
    assert pc.diff(model, fresh, only=LORA).ok and not pc.diff(model, fresh).ok


@pytest.mark.ckpt_roundtrip("plain")
def test_an_adapter_round_trips_through_peft(ckpt):
    def load(path):
        return peft.PeftModel.from_pretrained(llama(seed=1), path)  # another base: only= compares the adapter

    reloaded = ckpt.roundtrip(with_adapter, save=lambda model, path: model.save_pretrained(path),
                              load=load, only=LORA)
    assert isinstance(reloaded, peft.PeftModel)


@pytest.mark.ckpt_roundtrip("plain")
def test_a_load_that_leaves_the_adapter_fresh_is_a_no_op_adapter(ckpt):
    with pytest.raises(pc.CheckpointMismatch) as err:
        ckpt.roundtrip(with_adapter, save=lambda model, path: model.save_pretrained(path),
                       load=lambda path: with_adapter(seed=1, trained=False), only=LORA)
    [cause] = _causes(err.value.diff)
    assert cause.kind == "adapter" and cause.text.startswith(
        "lora_B of 4 adapted layers is all zeros in the reloaded model but trained in the saved "
        "model (base_model.model.model.layers.0.self_attn.q_proj, ")
    assert "[values]" not in str(err.value)


def test_adapter_keys_that_carry_the_adapter_name_match_nothing(adapter, tmp_path):
    model, _ = adapter
    drifted = {k: v.detach().contiguous() for k, v in model.state_dict().items() if "lora_" in k}
    save_file(drifted, tmp_path / "adapter.safetensors")  # keys still carry .default.
    [cause] = _causes(pc.diff(model, tmp_path / "adapter.safetensors", only=LORA))
    assert cause.kind == "adapter" and cause.text.startswith(
        "8 adapter tensors in the checkpoint match nothing in the model: their names carry the "
        "adapter's name (.default.), which peft's files leave out")


def test_adapter_keys_without_the_peft_prefix_silently_do_not_load(adapter, tmp_path):
    model, path = adapter
    drifted = {k.removeprefix("base_model.model."): v for k, v in load_file(path).items()}
    save_file(drifted, tmp_path / "adapter.safetensors")
    [cause] = _causes(pc.diff(model, tmp_path / "adapter.safetensors", only=LORA))
    assert cause.kind == "adapter" and "their names lack base_model.model." in cause.text
    # what peft itself does with that file: places nothing, raises nothing
    fresh = with_adapter(seed=1, trained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = peft.set_peft_model_state_dict(fresh, load_file(tmp_path / "adapter.safetensors"))
    assert len(result.unexpected_keys) == 8
    [cause] = _causes(pc.diff(model, fresh, only=LORA))
    assert cause.kind == "adapter" and "is all zeros in the checkpoint" in cause.text


def test_a_merged_checkpoint_that_still_carries_the_adapter(tmp_path):
    unmerged = with_adapter()
    unmerged.merge_adapter()  # merged in place, adapter layers kept
    torch.save(unmerged.base_model.model.state_dict(), tmp_path / "merged.pt")
    merged = with_adapter().merge_and_unload()
    diff = pc.diff(merged, tmp_path / "merged.pt", values=False)
    [cause] = _causes(diff)
    assert cause.kind == "adapter" and cause.text.startswith(
        "the checkpoint still carries the adapter beside a merged model: 8 lora_A/lora_B tensors "
        "and 4 base_layer/base_model.model. names")
    assert "merge_and_unload()" in cause.fix
