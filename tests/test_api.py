"""The library API on real files: exact round trips, ties, config drift, every format."""

import json

import pytest
import torch
from safetensors.torch import save_file

import pytest_ckpt as pc
from tests.tinymodel import TinyConfig, tiny


def awkward_tensors():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    nan = torch.tensor([float("nan"), 1.0, float("-inf"), float("inf")])
    return {
        "nan": nan,
        "neg_zero": torch.tensor([-0.0, 0.0, -0.0]),
        "bf16": torch.randn(5, 3).to(torch.bfloat16),
        "f16": torch.randn(7).to(torch.float16),
        "f8e4": torch.randn(6).to(torch.float8_e4m3fn),
        "f8e5": torch.randn(6).to(torch.float8_e5m2),
        "f64": torch.randn(3, dtype=torch.float64),
        "i64": torch.tensor([-(2**62), 0, 2**62]),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "noncontig": base.t(),
        "sliced": base[:, ::2],
    }


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_exact_round_trips_are_never_flagged(tmp_path, suffix):
    tensors = awkward_tensors()
    path = pc.save(tensors, tmp_path / f"awkward{suffix}")
    loaded = pc.load_state_dict(path)
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and loaded[name].shape == t.shape, name
    d = pc.diff(tensors, path)
    assert d.ok, str(d)
    assert pc.diff(tensors, loaded).ok


def test_diff_with_rtol_alone():
    # the public call with a relative tolerance only: within it ok, beyond it one value differs
    assert pc.diff({"w": torch.tensor(1000.0)}, {"w": torch.tensor(1000.5)}, rtol=1e-3).ok
    d = pc.diff({"w": torch.tensor(1000.0)}, {"w": torch.tensor(1000.5)}, rtol=1e-4)
    assert not d.ok and d.values == {"w": 0.5}
    assert "rtol=0.0001" in str(d)


def test_one_ulp_and_nan_position_are_differences():
    a = {"w": torch.tensor([1.0, float("nan"), 2.0])}
    ulp = {"w": torch.tensor([torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)).item(), float("nan"), 2.0])}
    moved = {"w": torch.tensor([1.0, 2.0, float("nan")])}
    assert not pc.diff(a, ulp).ok and "w" in pc.diff(a, ulp).values
    assert not pc.diff(a, moved).ok
    assert pc.diff(a, ulp, atol=1e-6).ok


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_ties_survive_save_and_load_into_restores_them(tmp_path, suffix):
    saved = tiny(2, seed=1)
    path = pc.save(saved, tmp_path / f"tied{suffix}")
    assert pc.diff(saved, path).ok
    model = tiny(2, seed=2)
    pc.load_into(model, path)
    assert model.lm_head.weight is model.embed.weight
    assert pc.diff(saved, model).ok
    sd = pc.load_state_dict(path)
    assert sd["embed.weight"].untyped_storage().data_ptr() == sd["lm_head.weight"].untyped_storage().data_ptr()


@pytest.mark.parametrize("copy", ["clone", "half"])
def test_identical_untied_copies_are_fine_a_load_re_ties_them(tmp_path, copy):
    # {k: v.clone() ...} or minimind's {k: v.half() ...} before saving: every tensor stored
    # apart, tied ones too. torch loads it correctly (the model's one tensor takes either
    # copy): not a broken tie
    saved = tiny(2) if copy == "clone" else tiny(2).half()
    path = tmp_path / "cloned.pt"
    torch.save({k: getattr(v, copy)() for k, v in tiny(2).state_dict().items()}, path)
    d = pc.diff(saved, path)
    assert d.ok and d.ties == []
    assert [n.text for n in d.notes if n.kind == "tied"] == [
        f"embed.weight = lm_head.weight: one tensor in the model, stored in {path} as identical "
        "copies: loading re-ties them, nothing is lost"]
    model = tiny(2, seed=7).to(saved.embed.weight.dtype)
    assert pc.load_into(model, path).ok
    assert model.lm_head.weight is model.embed.weight and pc.diff(saved, model).ok
    # schema only: the copies are not read, so nothing is claimed about them
    assert pc.diff(saved, path, values=False).ok


def test_untied_copies_that_differ_say_which_copy_a_load_keeps(tmp_path):
    saved = tiny(2)
    sd = {k: v.clone() for k, v in saved.state_dict().items()}
    sd["lm_head.weight"] += 1  # e.g. a save that cast or trained one copy only
    path = tmp_path / "untied.pt"
    torch.save(sd, path)
    d = pc.diff(saved, path)
    assert d.ties == [("embed.weight", "lm_head.weight")]
    tied = [n for n in d.notes if n.kind == "tied"]
    assert len(tied) == 1 and not tied[0].info
    assert ("copies that differ (largest max-abs difference 1): load_state_dict keeps "
            "lm_head.weight (loaded last) and drops embed.weight") in tied[0].text
    with pytest.raises(pc.CheckpointMismatch, match="keeps lm_head.weight"):
        pc.load_into(tiny(2), path)


def test_a_live_model_whose_tie_is_gone_is_still_broken():
    # a reloaded module holds two tensors: nothing will re-tie them, equal values or not
    saved, reloaded = tiny(2), tiny(2)
    reloaded.lm_head.weight = torch.nn.Parameter(reloaded.embed.weight.detach().clone())
    d = pc.diff(saved, reloaded)
    assert d.ties == [("embed.weight", "lm_head.weight")] and not d.ok


def test_config_drift_fails_strict_load_naming_each_field(tmp_path):
    path = pc.save(tiny(2), tmp_path / "c.pt", config=TinyConfig(num_hidden_layers=2))
    model = tiny(2)
    with pytest.raises(pc.CheckpointMismatch) as err:
        pc.load_into(model, path, config=TinyConfig(num_hidden_layers=2, dropout=0.1))
    assert "dropout" in str(err.value) and "0.1" in str(err.value)
    assert err.value.diff.config == {"dropout": (0.1, 0.0)}
    report = pc.load_into(model, path, config=TinyConfig(num_hidden_layers=2))
    assert report.diff.ok


def test_transformers_style_config_object_is_stored(tmp_path):
    class Cfg:
        def __init__(self, **kw):
            self.__dict__.update(kw)

        def to_dict(self):
            return dict(self.__dict__)

    path = pc.save(tiny(2), tmp_path / "c.safetensors", config=Cfg(n_layer=2, n_embd=16))
    with pytest.raises(pc.CheckpointMismatch, match="n_embd"):
        pc.load_into(tiny(2), path, config=Cfg(n_layer=2, n_embd=32))


def test_sharded_hf_directory(tmp_path):
    sd = tiny(4).state_dict()
    sd = {k: v.clone() for k, v in sd.items()}  # safetensors refuses shared tensors
    names = sorted(sd)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: sd[k].contiguous() for k in keys}, tmp_path / shard)
        weight_map.update({k: shard for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert set(pc.schema(tmp_path)) == set(sd)
    assert pc.diff(sd, tmp_path).ok
    pc.verify(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(pc.CheckpointError, match="model-00002-of-00002.safetensors"):
        pc.verify(tmp_path)
    with pytest.raises(pc.CheckpointError, match="model-00002-of-00002.safetensors"):
        pc.schema(tmp_path)


def test_dcp_directory(tmp_path):
    import torch.distributed.checkpoint as dcp

    saved = tiny(3, seed=1)
    sd = {k: v.clone() for k, v in saved.state_dict().items()}
    dcp.save({"model": sd, "step": 7}, checkpoint_id=str(tmp_path / "dcp"), no_dist=True)
    schema = pc.schema(tmp_path / "dcp")
    assert schema.located_at == ("model",)
    assert set(schema) == set(sd)
    model = tiny(3, seed=2)
    pc.load_into(model, tmp_path / "dcp")
    assert pc.diff(saved, model).ok
    assert pc.diff(saved, tmp_path / "dcp").ok  # DCP cannot store ties: compared by values


def test_legacy_torch_format(tmp_path):
    saved = tiny(2, seed=1)
    path = tmp_path / "legacy.pth"
    torch.save(saved.state_dict(), path, _use_new_zipfile_serialization=False)
    assert set(pc.schema(path)) == set(saved.state_dict())
    assert pc.diff(saved, path).ok


def test_schema_reads_no_tensor_data(tmp_path):
    path = pc.save(tiny(2), tmp_path / "m.safetensors")
    schema = pc.schema(path)
    assert schema["embed.weight"].shape == (32, 16) and schema["embed.weight"].dtype == torch.float32
    assert pc.schema(tiny(2)) == schema


def test_assert_same_raises_an_assertion_error_with_the_report(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(tiny(3).state_dict(), path)
    with pytest.raises(AssertionError) as err:
        pc.assert_same(tiny(2), path)
    assert isinstance(err.value, pc.CheckpointMismatch)
    assert str(err.value) == str(err.value.diff)
    json.dumps(err.value.diff.to_dict())


def test_hf_save_pretrained_directory_with_tied_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    saved = transformers.GPT2LMHeadModel(cfg)
    saved.save_pretrained(tmp_path)
    d = pc.diff(saved, tmp_path)
    assert d.ok, str(d)
    assert any(n.kind == "tied" and "lm_head.weight" in n.text for n in d.notes)
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(cfg)
    pc.load_into(model, tmp_path)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert pc.diff(saved, model).ok


def test_inspect_describes_a_file_and_save_schema_writes_a_golden_file(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    torch.save({"epoch": 1, "model": model.state_dict()}, tmp_path / "ckpt.pt")
    found = pc.inspect(tmp_path / "ckpt.pt")
    assert found.format == "torch" and found.schema.located_at == ("model",)
    assert found.to_dict()["tensors"] == 4 and "located at: model" in str(found)
    golden = tmp_path / "arch.json"
    assert pc.save_schema(model, golden) is True
    assert pc.save_schema(model, golden) is False  # the same text: nothing written
    assert pc.diff(model, golden).ok
    fewer = pc.diff(torch.nn.Sequential(torch.nn.Linear(2, 2)), golden)
    assert not fewer.ok and "the snapshot has 2 blocks" in str(fewer)


# -- a module that holds the model as an attribute (a LightningModule) -----------------------

class Net(torch.nn.Module):
    def __init__(self, hidden=4):
        super().__init__()
        self.l1 = torch.nn.Linear(3, hidden)
        self.l2 = torch.nn.Linear(hidden, 2)


class LitNet(torch.nn.Module):  # pl.LightningModule's shape: self.model = Net()
    def __init__(self, hidden=4):
        super().__init__()
        self.model = Net(hidden)


def _load_stripping_model_prefix(path):
    # the project's inference load: a bare Net from the Lightning checkpoint
    net = Net()
    net.load_state_dict({k.removeprefix("model."): v for k, v in torch.load(path)["state_dict"].items()})
    return net


def test_lightning_round_trip_into_a_bare_model_is_ok_with_an_info_note(tmp_path):
    saved = LitNet()
    path = tmp_path / "epoch=0-step=10.ckpt"
    torch.save({"epoch": 0, "state_dict": saved.state_dict()}, path)
    reloaded = _load_stripping_model_prefix(path)
    note = ("attribute prefix model. removed from every name in model (LitNet): the other side "
            "is the module it holds as .model (e.g. a LightningModule's self.model, or transformers' "
            "base_model_prefix 'model')")
    d = pc.diff(saved, reloaded)  # module vs module: the saved one carries the prefix
    assert d.ok, str(d)
    assert [n.text for n in d.notes if n.kind == "prefix"] == [note] and d.notes[0].info
    assert "[renamed]" not in str(d)
    back = pc.diff(reloaded, saved)  # and the other way round
    assert back.ok and [n.kind for n in back.notes] == ["prefix"]
    # loading, either way round
    net = Net()
    assert pc.load_into(net, path).stripped == ("model.",) and pc.diff(saved, net).ok
    pc.save(net, tmp_path / "net.pt")
    lit = LitNet()
    assert pc.load_into(lit, tmp_path / "net.pt").ok and pc.diff(saved, lit).ok


def test_an_attribute_prefix_is_never_guessed_without_a_target(tmp_path):
    path = tmp_path / "lit.pt"
    torch.save(LitNet().state_dict(), path)
    assert set(pc.schema(path)) == {f"model.{n}" for n in Net().state_dict()}
    assert set(pc.load_state_dict(path)) == {f"model.{n}" for n in Net().state_dict()}
    # a target whose own names carry the prefix keeps it
    d = pc.diff(LitNet(), path, values=False)
    assert d.ok and not [n for n in d.notes if n.kind == "prefix"]


def test_attribute_prefix_with_a_real_drift_names_the_drift_not_a_rename():
    d = pc.diff(LitNet(hidden=5), Net(hidden=4), values=False)
    assert not d.ok and "[renamed]" not in str(d)
    assert {n.kind for n in d.notes} == {"prefix", "shape"}


# -- intended partial loads: expect_missing= ---------------------------------------------------

def _chinese_clip():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.ChineseCLIPConfig(
        text_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, vocab_size=64, max_position_embeddings=32),
        vision_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, image_size=8, patch_size=4),
        projection_dim=8)
    return lambda: transformers.ChineseCLIPModel(config)


def test_expect_missing_declares_a_projection_trained_from_scratch(tmp_path):
    # Chinese-CLIP's fine-tuning: the towers come from a checkpoint, the projections stay fresh
    build = _chinese_clip()
    towers = {k: v for k, v in build().state_dict().items()
              if not k.startswith(("text_projection", "visual_projection"))}
    path = tmp_path / "towers.pt"
    torch.save({"state_dict": towers}, path)
    with pytest.raises(pc.CheckpointMismatch, match=r"\[missing\] 2 tensors missing"):
        pc.load_into(build(), path)
    model = build()
    fresh = model.text_projection.weight.detach().clone()
    report = pc.load_into(model, path, expect_missing=["text_projection", "visual_projection"])
    assert report.ok and report.diff.missing == []
    assert report.diff.expected_missing == ["text_projection.weight", "visual_projection.weight"]
    assert str(report.diff).splitlines() == [
        f"ok: {len(towers)} tensors match in name, shape and dtype (values not compared) "
        "(found at state_dict)",
        f"  [nested] weights found nested at state_dict ({len(towers)} tensors) in {path}",
        f"  [missing] 2 tensors not in {path}, left as the model built them, as expect_missing= "
        "allows: text_projection.weight, visual_projection.weight"]
    assert torch.equal(model.text_projection.weight, fresh)
    assert pc.diff(towers, {k: v for k, v in model.state_dict().items() if k in towers}).ok
    # anything else missing still fails strict, and only it is named
    del towers["logit_scale"]
    torch.save({"state_dict": towers}, path)
    with pytest.raises(pc.CheckpointMismatch) as info:
        pc.load_into(build(), path, expect_missing=["text_projection", "visual_projection"])
    assert info.value.diff.missing == ["logit_scale"]


class LoraLinear(torch.nn.Module):  # peft's naming: base_layer, lora_A, lora_B
    def __init__(self, n=4, r=2):
        super().__init__()
        self.base_layer = torch.nn.Linear(n, n)
        self.lora_A = torch.nn.Linear(n, r, bias=False)
        self.lora_B = torch.nn.Linear(r, n, bias=False)


def test_expect_missing_keeps_lora_bases_fresh():
    model = torch.nn.ModuleDict({"q": LoraLinear(), "v": LoraLinear()})
    adapters = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" in k}
    other = torch.nn.ModuleDict({"q": LoraLinear(), "v": LoraLinear()})
    base = other.q.base_layer.weight.detach().clone()
    report = pc.load_into(other, adapters, expect_missing=["*.base_layer"])
    assert report.ok and len(report.diff.expected_missing) == 4
    assert torch.equal(other.q.base_layer.weight, base)
    assert torch.equal(other.q.lora_A.weight, model.q.lora_A.weight)
    # strict=False reports, and a pattern that matches nothing changes nothing
    assert pc.load_into(other, adapters, strict=False, expect_missing=["nothing.*"]).diff.missing


# -- a training state's damaged model beside a full EMA (issue 26, item 14) -------------------

def _bn_net(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    bn = net[1]  # running stats as training leaves them: not a fresh model's
    bn.running_mean.copy_(torch.randn(4))
    bn.running_var.copy_(torch.rand(4) + 0.5)
    bn.num_batches_tracked.fill_(7)
    return net


BN_BUFFERS = ["1.num_batches_tracked", "1.running_mean", "1.running_var"]


def _ema_state(tmp_path, ema):
    """The user's save: the model as named_parameters() (BatchNorm's running stats dropped),
    beside a full EMA."""
    net = _bn_net()
    path = tmp_path / "train.pt"
    torch.save({"epoch": 3, "model": {n: p for n, p in net.named_parameters()}, "ema": ema(net),
                "optimizer": torch.optim.SGD(net.parameters(), lr=0.1).state_dict()}, path)
    return path


def _averaged(net):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    avg = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.99))
    avg.update_parameters(net)
    return avg.state_dict()  # module.* and n_averaged


@pytest.mark.parametrize("ema", [lambda net: {k: v.clone() for k, v in net.state_dict().items()},
                                 _averaged], ids=["state-dict-copy", "AveragedModel"])
def test_a_partial_model_beside_a_full_ema_fails_naming_the_model_not_the_ema(tmp_path, ema):
    path = _ema_state(tmp_path, ema)
    assert pc.schema(path, like=_bn_net()).located_at == ("model",)
    with pytest.raises(pc.CheckpointMismatch) as info:
        pc.load_into(_bn_net(1), path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path} differs from model (Sequential): 3 missing (1 cause)"
    assert lines[1] == (
        f"  [partial] model in {path}, the training state's model, lacks 3 tensors that ema beside "
        f"it holds: {', '.join(BN_BUFFERS)}; read model, not ema (which fits the model, but is "
        "another copy of its weights, e.g. an EMA)")
    assert lines[2].startswith("      fix: save the whole model.state_dict() as model "
                               "(named_parameters() leaves out buffers")
    assert "n_averaged" not in str(info.value) and "head" not in str(info.value)
    # strict=False loads the model's own tensors and reports what it lacks
    target = _bn_net(1)
    report = pc.load_into(target, path, strict=False)
    assert report.located_at == ("model",) and report.diff.missing == BN_BUFFERS
    assert torch.equal(target[0].weight, _bn_net()[0].weight)


def test_a_partial_model_turns_its_schema_snapshot_red(tmp_path):
    good = tmp_path / "good.pt"
    net = _bn_net()
    torch.save({"model": net.state_dict(), "ema": {k: v.clone() for k, v in net.state_dict().items()}},
               good)
    golden = tmp_path / "arch.json"
    pc.save_schema(good, golden, like=net)
    assert pc.diff(good, golden, values=False, like=net).ok
    bad = _ema_state(tmp_path, lambda n: {k: v.clone() for k, v in n.state_dict().items()})
    d = pc.diff(bad, golden, values=False, like=net)  # what ckpt_snapshot.assert_match(like=) runs
    assert not d.ok and d.unexpected == BN_BUFFERS
    assert [n.kind for n in d.notes if not n.info] == ["partial"]


def test_without_like_the_larger_copy_is_read_and_inspect_says_what_the_model_lacks(tmp_path):
    path = _ema_state(tmp_path, lambda n: {k: v.clone() for k, v in n.state_dict().items()})
    found = pc.inspect(path)
    assert found.schema.located_at == ("ema",)  # without like=: the most tensors, as documented
    assert (f"model in {path}, which the training state names as the model, lacks 3 tensors that "
            f"ema holds ({', '.join(BN_BUFFERS)}): ema was read; pass like= the model to check "
            "model itself") in [n.text for n in found.notes]


def test_an_ema_kept_as_an_averaged_model_loads_into_the_bare_model(tmp_path):
    net = _bn_net()
    target = _bn_net(1)
    report = pc.load_into(target, _averaged(net))
    assert report.ok and report.stripped == ("module.",), str(report.diff)
    assert [n.text for n in report.diff.notes] == [
        "n_averaged left out and wrapper prefix module. removed from every name in state dict "
        "(torch.optim.swa_utils.AveragedModel keeps the model as .module and counts its updates "
        "beside it)"]
    assert pc.diff(net, target).ok
    # two AveragedModels compare their counters too: n_averaged is state of theirs
    other = _averaged(net)
    other["n_averaged"] += 1
    assert pc.diff(_averaged(net), other).values == {"n_averaged": 1.0}


def test_full_copies_or_a_smaller_model_beside_a_larger_one_are_no_partial_model(tmp_path):
    net = _bn_net()
    full = {k: v.clone() for k, v in net.state_dict().items()}
    path = tmp_path / "full.pt"
    torch.save({"model": net.state_dict(), "ema": full}, path)
    assert pc.load_into(_bn_net(1), path).located_at == ("model",)
    # a student beside its teacher: a smaller model lacks whole blocks, it is not damaged
    student, teacher = tiny(2), tiny(4)
    path = tmp_path / "distill.pt"
    torch.save({"model": student.state_dict(), "teacher": teacher.state_dict()}, path)
    report = pc.load_into(tiny(4, seed=1), path)
    assert report.ok and report.located_at == ("teacher",)
    assert pc.load_into(tiny(2, seed=1), path).located_at == ("model",)


def test_the_layer_field_is_named_for_a_config_held_as_cfg():
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        n_layers: int
        dim: int = 8

    class Net(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg  # not .config: the hint must still name the field
            self.layers = torch.nn.ModuleList(torch.nn.Linear(cfg.dim, cfg.dim) for _ in range(cfg.n_layers))

    with pytest.raises(pc.CheckpointMismatch) as info:
        pc.load_into(Net(Cfg(2)), Net(Cfg(3)).state_dict())
    assert str(info.value).splitlines()[1] == (
        "  [layer-count] layers.2.*: 1 block unexpected: the checkpoint has 3 blocks, the model 2; "
        "n_layers: 3 -> 2")


def test_load_into_with_a_declared_cast_loads_a_half_save_into_a_float32_model(tmp_path):
    import os

    saved = tiny(2)
    path = tmp_path / "pretrain.pth"
    # minimind's save: .half() on purpose, written to .tmp and moved into place
    torch.save({k: v.half() for k, v in saved.state_dict().items()}, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)
    with pytest.raises(pc.CheckpointMismatch) as info:
        pc.load_into(tiny(2, seed=1), path)
    assert str(info.value).splitlines()[1:3] == [
        "  [dtype] 18 tensors are float16 in the checkpoint, float32 in the model",
        "      fix: save from the model in float32 (model.to(torch.float32) before saving), or build "
        "the model in float16; a cast made on purpose is declared with pc.load_into(..., "
        "dtype=torch.float16)"]
    model = tiny(2, seed=1)
    report = pc.load_into(model, path, dtype=torch.float16)
    assert report.ok, str(report.diff)
    assert str(report.diff).splitlines()[1] == (
        f"  [dtype] 18 tensors float16 in {path}, float32 in the model: read as float32, as "
        "dtype=torch.float16 declares")
    assert next(model.parameters()).dtype == torch.float32
    assert pc.diff({k: v.half().float() for k, v in saved.state_dict().items()}, model).ok
    # another cast than the one declared is still a difference; so is a non-floating dtype=
    with pytest.raises(pc.CheckpointMismatch, match=r"\[dtype\]"):
        pc.load_into(tiny(2), path, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="torch.int8 is not a floating dtype"):
        pc.load_into(tiny(2), path, dtype=torch.int8)


def test_against_a_snapshot_the_model_is_what_differs(tmp_path):
    path = tmp_path / "arch.json"
    pc.save_schema(tiny(3), path)
    lines = str(pc.diff(tiny(2), path, values=False)).splitlines()
    assert lines[0] == f"model (TinyLM) differs from snapshot {path.name}: 7 unexpected (1 cause)"
    assert lines[1] == ("  [layer-count] layers.2.*: 1 block unexpected: the snapshot has 3 blocks, "
                        "the model 2; num_hidden_layers: 3 -> 2")
    # a checkpoint is still what differs from the model
    torch.save(tiny(3).state_dict(), tmp_path / "three.pt")
    assert str(pc.diff(tiny(2), tmp_path / "three.pt")).startswith(f"{tmp_path / 'three.pt'} differs from model")


def test_swapped_arguments_are_named(tmp_path):
    model = tiny(2)
    path = tmp_path / "ckpt.pt"
    for where in (path, str(path)):  # absent: the path must not be read as a checkpoint
        with pytest.raises(TypeError) as info:
            pc.save(where, model)
        assert str(info.value) == ("pc.save(source, path): path must be a str or os.PathLike, got TinyLM: "
                                   "the arguments are the other way round, pc.save(model, path)")
    assert not path.exists()
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got int$"):
        pc.save(model, 3)
    pc.save(model, path)
    with pytest.raises(TypeError) as info:
        pc.load_into(str(path), model)
    assert str(info.value) == (f"pc.load_into(model, source): model must be an nn.Module to load into, "
                               f"got str {str(path)!r}: the arguments are the other way round, "
                               "pc.load_into(model, path)")
