"""Hugging Face sharded directories: merged from the shards, every failure names the shard."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_ckpt import formats
from pytest_ckpt.errors import CheckpointError


def _tensors():
    g = torch.Generator().manual_seed(1)
    return {f"layers.{i}.{p}": torch.randn(4, 4, generator=g) for i in range(3) for p in ("q", "k")}


def _shard(tmp_path, kind="safetensors", n=3):
    from safetensors.torch import save_file

    d = tmp_path / f"hf-{kind}"
    d.mkdir()
    tensors = _tensors()
    names = list(tensors)
    weight_map = {}
    for i in range(n):
        shard = f"model-{i + 1:05d}-of-{n:05d}.{kind}"
        part = {k: tensors[k] for k in names[i::n]}
        if kind == "safetensors":
            save_file(part, str(d / shard), metadata={"format": "pt"})
        else:
            torch.save(part, d / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = d / f"model.{kind}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return d, tensors


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_reads_one_flat_dict(tmp_path, kind, same):
    d, tensors = _shard(tmp_path, kind)
    for meta in (True, False):
        c = formats.read(d, meta=meta)
        assert c.format == "hf-sharded"
        assert c.files[0].name.endswith(".index.json") and len(c.files) == 4
        assert sorted(c.tree) == sorted(tensors)
        assert c.ties_expressible == (kind == "bin")
        if not meta:
            same(tensors, c.tree)
    formats.verify(d)


def test_bin_shard_meta_keys_do_not_collide_across_files(tmp_path):
    d, _ = _shard(tmp_path, "bin")
    c = formats.read(d, meta=True)
    keys = [c.tie_key(t) for t in c.tree.values()]
    assert None not in keys and len(set(keys)) == len(keys)


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_absent_shard_is_incomplete_and_named(tmp_path, kind):
    d, _ = _shard(tmp_path, kind)
    (d / f"model-00002-of-00003.{kind}").unlink()
    for call in (lambda: formats.read(d, meta=True), lambda: formats.verify(d)):
        with pytest.raises(CheckpointError) as info:
            call()
        err = info.value
        assert err.kind == "incomplete"
        assert f"model-00002-of-00003.{kind}" in str(err) and f"model.{kind}.index.json" in err.cause


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_short_shard_is_incomplete_and_named(tmp_path, kind):
    d, _ = _shard(tmp_path, kind)
    shard = d / f"model-00003-of-00003.{kind}"
    shard.write_bytes(shard.read_bytes()[:-20])
    for call in (lambda: formats.read(d, meta=True), lambda: formats.read(d, meta=False), lambda: formats.verify(d)):
        with pytest.raises(CheckpointError) as info:
            call()
        assert info.value.kind == "incomplete" and shard.name in str(info.value)


def test_name_in_weight_map_missing_from_its_shard(tmp_path):
    d, _ = _shard(tmp_path)
    index = d / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["layers.9.q"] = "model-00001-of-00003.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as info:
        formats.read(d, meta=True)
    assert info.value.kind == "incomplete" and "layers.9.q" in info.value.cause
    assert "model-00001-of-00003.safetensors" in str(info.value)


def test_transformers_save_pretrained_sharded(tmp_path, same):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "gpt2", max_shard_size="20KB", safe_serialization=True)
    c = formats.read(tmp_path / "gpt2", meta=False)
    assert c.format == "hf-sharded" and len(c.files) > 2
    expected = {k: v for k, v in model.state_dict().items() if k in c.tree}
    assert "transformer.wte.weight" in c.tree
    same(expected, {k: c.tree[k] for k in expected})
    formats.verify(tmp_path / "gpt2")


def test_an_interrupted_save_pretrained_is_incomplete_naming_the_absent_shards(tmp_path):
    # killed after its first shard: the other shards and the index (written last) never
    # reached disk. The -0000k-of-0000n names prove what is absent: never "1 block"
    import pytest_ckpt as pc

    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    d = tmp_path / "gpt2"
    model.save_pretrained(d, max_shard_size="20KB")
    shards = sorted(d.glob("model-*-of-*.safetensors"))
    total = len(shards)
    assert total > 2
    for shard in shards[1:]:
        shard.unlink()
    (d / "model.safetensors.index.json").unlink()
    calls = {"verify": pc.verify, "schema": pc.schema, "inspect": pc.inspect,
             "diff": lambda p: pc.diff(model, p), "load_into": lambda p: pc.load_into(model, p)}
    for what, call in calls.items():
        with pytest.raises(pc.CheckpointError) as info:
            call(d)
        err = info.value
        assert err.kind == "incomplete", what
        assert err.cause.startswith(f"1 shard of {total} present ({shards[0].name}); absent: "
                                    f"shards 2-{total} ({shards[1].name}, "), what
        assert "and the index model.safetensors.index.json: an interrupted save" in err.cause


def test_every_shard_without_the_index_is_incomplete_naming_the_index(tmp_path):
    d, _ = _shard(tmp_path)
    (d / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError) as info:
        formats.verify(d)
    assert info.value.kind == "incomplete" and info.value.path.endswith("model.safetensors.index.json")
    assert info.value.cause.startswith("all 3 shards are present but the index")


def test_a_dcp_directory_without_its_metadata_is_incomplete(tmp_path):
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(_tensors(), checkpoint_id=str(tmp_path / "dcp"))
    (tmp_path / "dcp" / ".metadata").unlink()  # the coordinator writes it last
    for call in (lambda: formats.read(tmp_path / "dcp", meta=True), lambda: formats.verify(tmp_path / "dcp")):
        with pytest.raises(CheckpointError) as info:
            call()
        assert info.value.kind == "incomplete"
        assert info.value.cause.startswith("DCP storage files (__0_0.distcp) but no .metadata")
