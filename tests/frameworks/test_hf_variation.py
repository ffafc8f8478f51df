"""The ``hf`` round trip: save_pretrained (sharded safetensors, config.json) and from_pretrained,
on a tiny Llama under transformers 5; a load that drops a tensor is caught; a model that is not a
PreTrainedModel is skipped with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pytest_ckpt as pc

transformers = pytest.importorskip("transformers", reason="the hf variation needs transformers")


def llama_config(**kw):
    fields = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaConfig(**{**fields, **kw})


def llama(config):
    transformers.logging.set_verbosity_error()
    return transformers.LlamaForCausalLM(config)


@pytest.mark.ckpt_roundtrip("hf")
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_a_tiny_llama_round_trips_through_save_pretrained(ckpt, tied):
    config = llama_config(tie_word_embeddings=tied)
    reloaded = ckpt.roundtrip(llama, config=config, inputs=torch.arange(6).view(1, 6))
    assert isinstance(reloaded, transformers.LlamaForCausalLM)
    assert (reloaded.lm_head.weight is reloaded.model.embed_tokens.weight) == tied
    written = Path(reloaded.name_or_path)  # the directory from_pretrained read
    assert (written / "model.safetensors.index.json").is_file()
    assert len(list(written.glob("model-*-of-*.safetensors"))) >= 2  # sharded
    stored = json.loads((written / "config.json").read_text())
    assert stored["num_hidden_layers"] == 2 and stored["architectures"] == ["LlamaForCausalLM"]
    # config.json is the checkpoint's config: inspect shows it, a deeper config is named by field
    found = pc.inspect(written)
    assert found.config_at == "config.json" and found.saved_by.startswith("transformers ")
    deeper = llama_config(tie_word_embeddings=tied, num_hidden_layers=3)
    with pytest.raises(pc.CheckpointMismatch, match=r"num_hidden_layers: 2 -> 3"):
        pc.load_into(llama(deeper), written, config=deeper)


@pytest.mark.ckpt_roundtrip("hf")
def test_a_load_that_drops_a_tensor_fails_the_hf_round_trip(ckpt):
    def load(path):
        model = transformers.LlamaForCausalLM.from_pretrained(path)
        with torch.no_grad():
            model.model.norm.weight.zero_()  # a load that leaves the final norm as built
        return model

    left = (r"\[values\] the reloaded model's model.norm.weight hold 0.0 everywhere, as freshly "
            r"built modules do, where the saved model's do not: your load did not copy them")
    with pytest.raises(pc.CheckpointMismatch, match=left):
        ckpt.roundtrip(llama, config=llama_config(), load=load)


@pytest.mark.ckpt_roundtrip("hf")
def test_a_model_without_save_pretrained_is_skipped_with_the_reason(ckpt):
    with pytest.raises(pytest.skip.Exception, match="not a transformers PreTrainedModel"):
        ckpt.roundtrip(lambda: torch.nn.Linear(2, 2))


def save_pretrained(model, path):
    model.save_pretrained(path)


def test_under_fsdp_a_save_pretrained_save_runs_on_rank_0_with_the_gathered_state(tmp_path):
    """Issue 26 item 11: every rank's save_pretrained of its DTensor shards ended in a 3,000-character
    rank traceback; a save_pretrained directory is one writer's checkpoint, which FSDP2 training writes on
    rank 0 from the gathered state (decided here, from what one call of the save writes)."""
    from pytest_ckpt.checks.variations.base import SaveJob
    from pytest_ckpt.checks.variations.fsdp import RANK_0, writes_on

    job = SaveJob(variation="fsdp", factory=llama, config=llama_config(), save=save_pretrained, directory=tmp_path)
    assert writes_on(job, tmp_path / "probe") == RANK_0
    assert not (tmp_path / "probe").exists()
