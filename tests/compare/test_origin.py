"""The interrupted judge's verdict (``compare.origin``) on real files: a torn multi-shard save
read back as a mix of the previous and the new checkpoint is "mixed", never "new"."""

import json

import torch
from safetensors.torch import load_file, save_file

import pytest_ckpt as pc
from pytest_ckpt.compare.origin import origin
from tests.tinymodel import tiny

INDEX = "model.safetensors.index.json"


def sharded(directory, sd, shards):
    """``sd`` written the way save_pretrained shards it: one safetensors file per shard, an index."""
    directory.mkdir(exist_ok=True)
    weight_map = {}
    for shard, names in shards.items():
        save_file({n: sd[n].contiguous() for n in names}, directory / shard)
        weight_map.update(dict.fromkeys(names, shard))
    (directory / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def two_states():
    torch.manual_seed(0)
    previous = {k: v.clone() for k, v in tiny(2).state_dict().items()}
    new = {k: v + 0.5 if v.is_floating_point() else v.clone() for k, v in previous.items()}
    return previous, new


def test_a_torn_multi_shard_checkpoint_is_mixed_with_counts(tmp_path):
    previous, new = two_states()
    names = sorted(previous)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    sharded(tmp_path / "ckpt", previous, shards)
    # the next save_pretrained into the same directory rewrote shard 1, then was killed: shard 2
    # still holds the previous step's tensors, and every file reads back whole
    save_file({n: new[n].contiguous() for n in names[:half]},
              tmp_path / "ckpt" / "model-00001-of-00002.safetensors")
    pc.verify(tmp_path / "ckpt")  # nothing for an integrity check to see: a silent divergence
    loaded = pc.load_state_dict(tmp_path / "ckpt")

    found = origin(loaded, previous, new)

    assert found.verdict == "mixed"
    assert (found.from_a, found.from_b, found.neither) == (len(names) - half, half, 0)
    assert str(found) == (f"{len(names) - half} tensors from the previous checkpoint, "
                          f"{half} from the new one, 0 from neither")


def test_whole_checkpoints_are_previous_or_new_and_a_fresh_model_is_none(tmp_path):
    previous, new = two_states()
    names = sorted(previous)
    shards = {"model-00001-of-00001.safetensors": names}
    for which, sd in (("previous", previous), ("new", new)):
        sharded(tmp_path / which, sd, shards)
        assert origin(pc.load_state_dict(tmp_path / which), previous, new).verdict == which
    fresh = {k: torch.full_like(v, 7.0) if v.is_floating_point() else v for k, v in previous.items()}
    assert origin(fresh, previous, new).verdict == "none"


def test_a_load_that_lost_a_shard_of_the_new_checkpoint_is_mixed_naming_what_is_missing(tmp_path):
    previous, new = two_states()
    names = sorted(previous)
    half = len(names) // 2
    sharded(tmp_path / "ckpt", new, {"model-00001-of-00002.safetensors": names[:half],
                                     "model-00002-of-00002.safetensors": names[half:]})
    # the save was killed before it wrote shard 2; a load that reads the shards it finds
    (tmp_path / "ckpt" / "model-00002-of-00002.safetensors").unlink()
    loaded = load_file(tmp_path / "ckpt" / "model-00001-of-00002.safetensors")

    found = origin(loaded, previous, new)

    assert found.verdict == "mixed"  # every tensor it returned is new, but not every new tensor
    assert (found.from_a, found.from_b, found.missing) == (0, half, names[half:])
    assert str(found).startswith(f"0 tensors from the previous checkpoint, {half} from the new one, "
                                 f"{len(names) - half} from neither ({len(names) - half} missing: ")


def test_a_tensor_only_the_new_checkpoint_holds_torn_is_from_neither(tmp_path):
    previous, new = two_states()
    new["ema.decay"] = torch.full((4,), 0.999)  # the new step's save adds a tensor, in a shard of its own
    names = sorted(previous)
    sharded(tmp_path / "ckpt", new, {"model-00001-of-00002.safetensors": names,
                                     "model-00002-of-00002.safetensors": ["ema.decay"]})
    # killed while writing shard 2's data: the file was laid out whole, its bytes are still zeros
    shard = tmp_path / "ckpt" / "model-00002-of-00002.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-16:] = bytes(16)
    shard.write_bytes(raw)
    loaded = pc.load_state_dict(tmp_path / "ckpt")
    assert torch.equal(loaded["ema.decay"], torch.zeros(4))

    found = origin(loaded, previous, new)

    assert found.verdict == "mixed"
    assert (found.from_a, found.from_b, found.neither, found.missing) == (0, len(names), 1, [])


def test_tensors_equal_in_both_checkpoints_tell_nothing_apart(tmp_path):
    previous, new = two_states()
    new["embed.weight"] = previous["embed.weight"].clone()  # frozen: the same in every save
    names = sorted(new)
    sharded(tmp_path / "new", new, {"model-00001-of-00001.safetensors": names})

    found = origin(pc.load_state_dict(tmp_path / "new"), previous, new)

    assert found.verdict == "new"
    assert (found.from_a, found.from_b, found.same) == (0, len(names) - 1, 1)
