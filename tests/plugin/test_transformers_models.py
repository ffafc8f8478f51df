"""Real consumers: GPT-2 (tied embeddings), Llama and BERT from ``transformers``, tiny configs.

Every variation must round-trip each family, layer drift must be refused, and
an inference loader that builds one layer fewer must fail every round trip
naming the block. Factories are module-level so the FSDP workers can import them.
"""

from __future__ import annotations

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.checks.variations import DEFAULT
from pytest_ckpt.checks.variations.layers import find_layers_field, get_field, with_layers

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

SIZE = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=128,
            max_position_embeddings=64)


def gpt2_config():
    return transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=64)


def llama_config():
    return transformers.LlamaConfig(num_hidden_layers=2, num_key_value_heads=1, **SIZE)


def bert_config():
    return transformers.BertConfig(num_hidden_layers=2, **SIZE)


def gpt2(config):
    return transformers.GPT2LMHeadModel(config)


def llama(config):
    return transformers.LlamaForCausalLM(config)


def bert(config):
    return transformers.BertForMaskedLM(config)


FAMILIES = {
    "gpt2": (gpt2, gpt2_config),
    "llama": (llama, llama_config),
    "bert": (bert, bert_config),
}
INPUTS = {"input_ids": torch.arange(10).view(1, 10) * 7 % 128}
# where each family keeps its numbered blocks
BLOCKS = {"gpt2": "transformer.h", "llama": "model.layers", "bert": "bert.encoder.layer"}


@pytest.mark.ckpt_roundtrip()
@pytest.mark.parametrize("family", FAMILIES)
def test_every_variation_round_trips(ckpt, family):
    factory, config = FAMILIES[family]
    reloaded = ckpt.roundtrip(factory, config=config(), inputs=INPUTS)
    if family == "gpt2":
        assert reloaded.lm_head.weight is reloaded.transformer.wte.weight


@pytest.mark.ckpt_roundtrip("layers-1", "layers+1")
@pytest.mark.parametrize("family", FAMILIES)
def test_layer_drift_is_refused(ckpt, family):
    factory, config = FAMILIES[family]
    refusal = ckpt.roundtrip(factory, config=config())
    assert isinstance(refusal, pc.CheckpointMismatch)
    block = f"{BLOCKS[family]}.{1 if ckpt.variation == 'layers-1' else 2}"
    assert block in str(refusal), str(refusal)


def loader_with_one_layer_fewer_fails(ckpt, family):
    factory, config = FAMILIES[family]
    field = find_layers_field(config())

    def load_fewer(path):
        model = factory(with_layers(config(), field, get_field(config(), field) - 1))
        pc.load_into(model, path)
        return model

    with pytest.raises(pc.CheckpointMismatch) as failure:
        ckpt.roundtrip(factory, config=config(), load=load_fewer)
    message = str(failure.value)
    assert f"{BLOCKS[family]}.1" in message, message
    assert any(n.kind == "layer-count" for n in failure.value.diff.notes)


@pytest.mark.ckpt_roundtrip()
def test_loader_with_one_layer_fewer_fails_every_round_trip(ckpt):
    loader_with_one_layer_fewer_fails(ckpt, "gpt2")


# the same for the other families without fsdp's two rank processes (12 s each): fsdp's own save
# and load of a transformers model are covered above for every family, and this drift for gpt2
@pytest.mark.ckpt_roundtrip(*(v for v in DEFAULT if v != "fsdp"))
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_loader_with_one_layer_fewer_fails_every_single_process_round_trip(ckpt, family):
    loader_with_one_layer_fewer_fails(ckpt, family)


def qwen3_config():
    # transformers 5 validates that layer_types has one entry per layer
    return transformers.Qwen3Config(num_hidden_layers=2, num_key_value_heads=1, head_dim=16, **SIZE)


def qwen3(config):
    return transformers.Qwen3ForCausalLM(config)


@pytest.mark.ckpt_roundtrip("layers-1", "layers+1")
def test_qwen3_layer_drift_is_refused(ckpt):
    refusal = ckpt.roundtrip(qwen3, config=qwen3_config())
    assert isinstance(refusal, pc.CheckpointMismatch)
    assert f"model.layers.{1 if ckpt.variation == 'layers-1' else 2}" in str(refusal)


def save_pretrained(model, path):
    model.save_pretrained(path)


def from_pretrained(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path)


@pytest.mark.ckpt_roundtrip("layers-1", "layers+1")
def test_from_pretrained_builds_what_the_checkpoint_holds(ckpt):
    # a load that reads the depth from the checkpoint's own config is right, not "accepting drift"
    model = ckpt.roundtrip(qwen3, config=qwen3_config(), save=save_pretrained, load=from_pretrained)
    assert model.config.num_hidden_layers == (1 if ckpt.variation == "layers-1" else 3)


def from_pretrained_narrower(path):
    config = qwen3_config()
    config.intermediate_size = 48  # serving's config drifted
    return transformers.Qwen3ForCausalLM.from_pretrained(path, config=config)


@pytest.mark.ckpt_roundtrip("plain")
def test_from_pretrained_refusal_is_explained_from_its_loading_report(ckpt):
    # transformers 5 raises "look at the above report": the keys are in what it logs, which
    # a project may have silenced
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with pytest.raises(pc.CheckpointMismatch) as failure:
            ckpt.roundtrip(qwen3, config=qwen3_config(), save=save_pretrained,
                           load=from_pretrained_narrower)
    finally:
        transformers.logging.set_verbosity(verbosity)
    first = str(failure.value).splitlines()[0]
    assert first.endswith(": [shape] model.layers.0-1.mlp.gate_proj.weight, model.layers.0-1.mlp."
                          "up_proj.weight: (64, 32) in the checkpoint, (48, 32) in the model your "
                          "load built (4 tensors)"), first
