"""reshard-3 and reshard-1: a checkpoint saved by 2 FSDP2 ranks, loaded on 3 and on 1, compared
bitwise after gathering, weights and optimizer state by name; a wrong reshard is named."""

from __future__ import annotations

import pytest

import pytest_ckpt as pc
from pytest_ckpt.checks.variations import VARIATIONS, VariationUnavailable
from pytest_ckpt.checks.variations.base import SaveJob
from pytest_ckpt.checks.variations.reshard import misplaced_rows
from tests.plugin import workers
from tests.plugin.test_transformers_models import gpt2, gpt2_config, llama, llama_config

pytestmark = pytest.mark.slow


@pytest.mark.ckpt_roundtrip("reshard-3", "reshard-1")
def test_gpt2_reshards_weights_and_optimizer_state(ckpt):
    reloaded = ckpt.roundtrip(gpt2, config=gpt2_config())
    # the optimizer state came back too, by parameter name (AdamW after one step)
    assert {"optimizer.transformer.h.0.attn.c_attn.weight.exp_avg",
            "optimizer.transformer.h.0.attn.c_attn.weight.step"} <= set(reloaded)


@pytest.mark.ckpt_roundtrip("reshard-3")
def test_llama_reshards_on_three_ranks(ckpt):
    ckpt.roundtrip(llama, config=llama_config())


@pytest.mark.ckpt_roundtrip("reshard-3", "reshard-1")
def test_odd_sized_tied_and_0dim_buffers_reshard(ckpt):
    reloaded = ckpt.roundtrip(workers.odd_tied)
    assert reloaded["odd.weight"].shape == (11, 5) and reloaded["temperature"].dim() == 0


def test_a_0dim_parameter_is_skipped_with_fsdp2s_reason(tmp_path):
    job = SaveJob(variation="reshard-3", factory=workers.scalar_parameter, directory=tmp_path)
    with pytest.raises(VariationUnavailable, match="FSDP2 cannot shard this model: .*scalar"):
        VARIATIONS["reshard-3"].load().produce(job)


@pytest.mark.ckpt_roundtrip("reshard-3")
def test_a_load_that_concatenates_shards_in_the_wrong_order_is_named(ckpt):
    with pytest.raises(pc.CheckpointMismatch) as failure:
        ckpt.roundtrip(workers.odd_tied, save=workers.save_model_only,
                       load_sharded=workers.load_shards_last_rank_first)
    message = str(failure.value)
    first = message.splitlines()[0]
    assert "ckpt-reshard-3 round trip" in first and "[reshard]" in first, message
    assert "load_shards_last_rank_first into fully_shard(model) on 3 ranks" in first, message
    assert "hold saved rows" in first and "fix: your load puts the shards together in the wrong order" in message, message


def test_rows_in_their_own_order_are_no_reshard_cause():
    import torch

    w = torch.arange(12.).reshape(6, 2)
    assert misplaced_rows({"w": w}, {"w": w + 1}, ["w"], 3) is None  # other values: not a reordering
    assert misplaced_rows({"w": w}, {"w": w.clone()}, ["w"], 3) is None


@pytest.mark.ckpt_roundtrip("reshard-1")
def test_the_default_load_refuses_metadata_asking_for_code_and_runs_nothing(ckpt, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARKER", str(marker))  # the ranks inherit it
    with pytest.raises(RuntimeError) as failure:
        ckpt.roundtrip(workers.odd_tied, save=workers.save_with_code_in_metadata)
    assert not marker.exists(), "the default load unpickled the DCP .metadata freely: the payload ran"
    message = str(failure.value)
    first = message.splitlines()[0]  # the rank's own error first, before its output
    assert first.startswith("reshard-1 (load on 1): rank 0 of 1 failed: CheckpointError: "), message
    assert "unsafe: the DCP metadata asks for os.system, which weights-only loading does not allow; " \
           "nothing was run" in first, message
