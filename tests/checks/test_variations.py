"""Each variation writes what it says, with the real wrapper; the launcher never leaks workers."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from torch import nn

from pytest_ckpt.processes import ranks as distributed
from pytest_ckpt.checks.variations.fsdp import FsdpJob, run_fsdp_save
from pytest_ckpt.processes.ranks import ProcessGroupScope
from pytest_ckpt.checks.variations.layers import changed_blocks, names_blocks
from pytest_ckpt.checks.variations import VARIATIONS, VariationUnavailable
from pytest_ckpt.checks.variations.base import SaveJob, perturb
from pytest_ckpt.checks.variations.layers import LayerCountUnknown, find_layers_field, with_layers
from tests.plugin import workers


@dataclasses.dataclass
class Cfg:
    n_layers: int = 2


class Net(nn.Module):
    def __init__(self, cfg: Cfg = Cfg()):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(cfg.n_layers))
        self.register_buffer("scale", torch.ones(4))
        self.register_buffer("cache", torch.zeros(4), persistent=False)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x * self.scale


@pytest.fixture
def produce(tmp_path):
    scope = ProcessGroupScope(tmp_path / "pg")

    def run(name, **kw):
        job = SaveJob(variation=name, factory=Net, directory=tmp_path / name,
                      process_group=scope.ensure, **kw)
        job.directory.mkdir()
        return VARIATIONS[name].load().produce(job)

    yield run
    scope.close()


@pytest.mark.parametrize("name, prefix", [
    ("plain", ""),
    ("dataparallel", "module."),
    ("ddp", "module."),
    ("compile", "_orig_mod."),
    ("ddp+compile", "_orig_mod.module."),
    ("compile+ddp", "module._orig_mod."),
])
def test_wrappers_write_their_real_prefixes(produce, name, prefix):
    saved = produce(name, inputs=torch.ones(1, 4))
    state = torch.load(saved.path, weights_only=True)
    assert sorted(state) == sorted(prefix + k for k in saved.reference.state_dict())
    for key, value in saved.reference.state_dict().items():
        assert torch.equal(state[prefix + key], value)


def test_nested_is_a_training_state_after_one_real_step(produce):
    saved = produce("nested")
    state = torch.load(saved.path, weights_only=True)
    assert set(state) == {"epoch", "step", "trainer", "optimizer", "scheduler", "rng"}
    weights = state["trainer"]["var_wo_ddp"]
    assert set(weights) == set(saved.reference.state_dict())
    assert torch.equal(weights["layers.0.weight"], saved.reference.layers[0].weight)
    assert state["optimizer"]["state"][0]["step"] == 1 and state["scheduler"]["last_epoch"] == 1


def test_safetensors_writes_a_safetensors_file(produce):
    import pytest_ckpt as pc

    saved = produce("safetensors")
    assert saved.path.suffix == ".safetensors"
    assert set(pc.load_state_dict(saved.path)) == set(saved.reference.state_dict())


def test_fsdp_saves_shards_from_two_ranks(tmp_path):
    job = SaveJob(variation="fsdp", factory=workers.tiny, directory=tmp_path)
    saved = VARIATIONS["fsdp"].load().produce(job)
    assert sorted(p.name for p in saved.path.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (saved.path / ".metadata").exists()
    assert isinstance(saved.reference, nn.Module)
    assert sorted(saved.reference.state_dict()) == ["0.bias", "0.weight", "1.bias", "1.weight"]


def test_perturb_touches_saved_tensors_only_and_keeps_ties():
    net = Net()
    net.layers[1].weight = net.layers[0].weight
    before = {k: v.clone() for k, v in net.state_dict().items()}
    perturb(net, seed=1)
    assert all(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.layers[1].weight is net.layers[0].weight
    assert torch.equal(net.cache, torch.zeros(4))


def test_ddp_scope_reuses_a_user_group_and_closes_its_own(tmp_path):
    import torch.distributed as dist

    scope = ProcessGroupScope(tmp_path)
    scope.ensure()
    assert dist.is_initialized() and scope.owned
    scope.close()
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=(tmp_path / "user").as_uri(), rank=0, world_size=1)
    try:
        scope = ProcessGroupScope(tmp_path / "again")
        scope.ensure()
        scope.close()
        assert dist.is_initialized() and not scope.owned
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("config, field", [
    (Cfg(3), "n_layers"),
    ({"depth": 3, "width": 8}, "depth"),
    (type("Obj", (), {"num_hidden_layers": 3})(), "num_hidden_layers"),
])
def test_layer_field_is_found_and_copied_without_touching_the_original(config, field):
    assert find_layers_field(config) == field
    fewer = with_layers(config, field, 2)
    get = (lambda c: c[field]) if isinstance(config, dict) else (lambda c: getattr(c, field))
    assert get(fewer) == 2 and get(config) == 3


@dataclasses.dataclass
class TextCfg:
    n_layer: int = 2


@dataclasses.dataclass
class MultiCfg:
    text_config: TextCfg = dataclasses.field(default_factory=TextCfg)
    hidden: int = 4


class MultiNet(nn.Module):
    def __init__(self, cfg: MultiCfg):
        super().__init__()
        self.h = nn.ModuleList(nn.Linear(cfg.hidden, cfg.hidden) for _ in range(cfg.text_config.n_layer))


@pytest.mark.parametrize("config", [MultiCfg(), {"text_config": {"n_layer": 2}, "hidden": 4}])
def test_nested_layer_field_is_the_one_reports_name(config, tmp_path):
    # the layer field the reports name (checkpoint.configs.layer_field) is the one layers±1 changes:
    # before they shared one finder, text_config.n_layer was named in a report but refused here
    from pytest_ckpt.checkpoint.configs import layer_field

    assert find_layers_field(config) == layer_field(config) == "text_config.n_layer"
    fewer = with_layers(config, "text_config.n_layer", 1)
    assert (fewer.text_config.n_layer if dataclasses.is_dataclass(fewer)
            else fewer["text_config"]["n_layer"]) == 1
    assert (config.text_config.n_layer if dataclasses.is_dataclass(config)
            else config["text_config"]["n_layer"]) == 2  # the original is untouched
    if dataclasses.is_dataclass(config):
        job = SaveJob(variation="layers-1", factory=MultiNet, config=config, directory=tmp_path)
        saved = VARIATIONS["layers-1"].load().produce(job)
        assert saved.layers == ("text_config.n_layer", 1, 2)
        assert len(saved.reference.h) == 1


def test_layer_field_unknown_names_the_fix():
    with pytest.raises(LayerCountUnknown, match="pass layers_field="):
        find_layers_field({"blocks": 2})
    assert find_layers_field({"blocks": 2}, "blocks") == "blocks"


def test_layers_without_config_is_unavailable(tmp_path):
    job = SaveJob(variation="layers-1", factory=Net, directory=tmp_path)
    with pytest.raises(VariationUnavailable, match="needs config="):
        VARIATIONS["layers-1"].load().produce(job)


def test_block_ranges_in_error_text():
    blocks = changed_blocks(Net(Cfg(3)), Net(Cfg(2)))
    assert blocks == ["layers.2"]
    assert names_blocks(RuntimeError('Unexpected key(s): "layers.2.weight"'), blocks)
    assert names_blocks(RuntimeError("layers.1-2.*: 2 blocks unexpected"), blocks)
    assert not names_blocks(RuntimeError("layers.1.weight: shape"), blocks)
    assert not names_blocks(RuntimeError("sublayers.2.weight"), blocks)


@pytest.mark.parametrize("factory, timeout, match, within", [
    ("hangs", 5, "did not finish within 5s", 30),
    ("crashes_on_rank_1", 120, "rank 1 cannot build the model", 30),  # no waiting for the timeout
])
def test_fsdp_workers_never_outlive_a_failure_or_timeout(tmp_path, monkeypatch, factory, timeout,
                                                        match, within):
    distributed.pool.shared().close()  # fresh workers, so that this test sees them start
    started = workers.record_started(monkeypatch, distributed.pool)
    job = FsdpJob(factory=("tests.plugin.workers", factory), config_blob=None, save=None,
                              seed=0, checkpoint_dir=str(tmp_path / "dcp"),
                              full_state_path=str(tmp_path / "full.pt"))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=match):
        run_fsdp_save(job, tmp_path / "w", timeout=timeout)
    assert time.monotonic() - t0 < within
    assert len(started) == 2 and not any(workers.alive(pid) for pid in started)


def test_unimportable_factory_is_unavailable():
    def closure():
        return nn.Linear(2, 2)

    with pytest.raises(VariationUnavailable, match="closure"):
        distributed.importable(closure, "factory")
    assert distributed.importable(workers.tiny, "factory") == ("tests.plugin.workers", "tiny")


def load_leaving_the_prefix(path):
    model = Net()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def test_a_wrapper_variation_failing_on_its_prefix_alone_says_how_to_leave_it_out():
    """Issue 26 item 10: real projects saw reds from wrappers their scripts never use (dataparallel)."""
    import pytest_ckpt as pc

    with pytest.raises(pc.CheckpointMismatch) as failure:
        pc.check_roundtrip(Net, variation="dataparallel", load=load_leaving_the_prefix)
    lines = str(failure.value).splitlines()
    assert "[prefix] every name your load passes starts with module." in lines[0]
    assert lines[-1] == ("      or, if your training never runs nn.DataParallel(model): leave dataparallel out (name the "
                         'variations it runs in the marker, @pytest.mark.ckpt_roundtrip("plain", "compile"), or for '
                         "every test in ini ckpt_variations = plain,compile)")
    with pytest.raises(pc.CheckpointMismatch) as failure:  # not a prefix: nothing to narrow
        pc.check_roundtrip(Net, variation="plain", load=lambda path: Net())
    assert "leave plain out" not in str(failure.value) and "or, if your training" not in str(failure.value)
