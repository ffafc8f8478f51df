"""The five failures pytest-ckpt exists for, each on real files written by real torch/safetensors."""

import json
import os

import pytest
import torch
from torch import nn

import pytest_ckpt as pc
from tests.tinymodel import TinyConfig, tiny


# -- 1. layer-count drift -----------------------------------------------------------------

def _layer_line(report: str) -> str:
    (line,) = [l for l in report.splitlines() if "layers.8-15" in l]
    return line


def test_layer_count_drift_is_one_line_with_range_counts(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(tiny(16).state_dict(), path)
    model = tiny(8)
    model.config = None  # no config known anywhere: the line still names range and counts
    d = pc.diff(model, path)
    assert not d.ok
    assert d.unexpected == sorted(n for n in tiny(16).state_dict() if n.split(".")[1] in map(str, range(8, 16)))
    assert d.missing == []
    line = _layer_line(str(d))
    assert "layers.8-15.*" in line and "8 blocks unexpected" in line
    assert "16" in line and "8" in line


@pytest.mark.parametrize("how", ["configs", "stored", "model-config"])
def test_layer_count_drift_names_the_config_field(tmp_path, how):
    path = tmp_path / "ckpt.pt"
    cfg16, cfg8 = TinyConfig(num_hidden_layers=16), TinyConfig(num_hidden_layers=8)
    kw = {}
    if how == "stored":
        pc.save(tiny(16), path, config=cfg16)
    else:
        torch.save(tiny(16).state_dict(), path)
    model = tiny(8)
    if how == "configs":
        model.config = None
        kw = {"configs": (cfg8, cfg16)}
    if how == "stored":
        model.config = None  # only the file knows its config; the model side's count is 8 blocks
    report = str(pc.diff(model, path, **kw))
    if how == "stored":
        assert "num_hidden_layers" in report and "16" in report
    else:
        assert "num_hidden_layers: 16 -> 8" in report
    assert "layers.8-15.*" in report


# -- 2. nested training state -------------------------------------------------------------

def _training_state(model, **more):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 3, dtype=torch.long)).sum().backward()
    opt.step()
    return {"epoch": 3, "iter": 1200,
            "trainer": {"var_wo_ddp": model.state_dict(), "var_opt": opt.state_dict(), **more},
            "args": {"lr": 1e-3, "layers": 4}}


def test_nested_training_state_is_located_and_loaded(tmp_path):
    saved = tiny(4, seed=1)
    path = tmp_path / "state.ckpt"
    torch.save(_training_state(saved), path)
    model = tiny(4, seed=2)
    report = pc.load_into(model, path)
    assert report.located_at == ("trainer", "var_wo_ddp")
    assert pc.schema(path).located_at == ("trainer", "var_wo_ddp")
    assert pc.diff(saved, model).ok
    d = pc.diff(model, path)
    assert d.ok and any(n.kind == "nested" and "trainer.var_wo_ddp" in n.text for n in d.notes)


def test_like_picks_the_candidate_matching_the_target_beside_ema_and_optimizer(tmp_path):
    student, teacher = tiny(2, seed=1), tiny(6, seed=2)
    path = tmp_path / "state.pt"
    # The teacher has more tensors: without `like` it would win.
    torch.save(_training_state(student, ema=teacher.state_dict()), path)
    assert pc.schema(path).located_at == ("trainer", "ema")
    sd = pc.load_state_dict(path, like=tiny(2))
    assert pc.diff(student, sd).ok
    d = pc.diff(tiny(2), path)
    nested = [n.text for n in d.notes if n.kind == "nested"]
    assert nested and "trainer.var_wo_ddp" in nested[0] and "passed over" in nested[0]


# -- 3. wrapper prefixes ---------------------------------------------------------------------

def _compiled(m):
    return torch.compile(m, backend="eager")


@pytest.mark.parametrize(
    "wrap, stripped",
    [
        (lambda m: nn.DataParallel(m), ("module.",)),
        (_compiled, ("_orig_mod.",)),
        (lambda m: _compiled(nn.DataParallel(m)), ("_orig_mod.", "module.")),
        (lambda m: nn.DataParallel(_compiled(m)), ("module.", "_orig_mod.")),
    ],
    ids=["module", "orig_mod", "orig_mod.module", "module.orig_mod"],
)
def test_wrapper_prefixes_are_stripped_on_the_checkpoint_side(tmp_path, wrap, stripped):
    saved = tiny(3, seed=1)
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(saved).state_dict(), path)
    raw = torch.load(path, weights_only=True)
    assert all(k.startswith("".join(stripped)) for k in raw)
    model = tiny(3, seed=2)
    report = pc.load_into(model, path)
    assert report.stripped == stripped
    assert pc.diff(saved, model).ok
    assert any(n.kind == "prefix" for n in pc.diff(model, path).notes)


def test_loading_into_a_wrapped_model_works(tmp_path):
    saved = tiny(3, seed=1)
    path = tmp_path / "plain.pt"
    torch.save(saved.state_dict(), path)
    inner = tiny(3, seed=2)
    pc.load_into(_compiled(nn.DataParallel(inner)), path)
    assert pc.diff(saved, inner).ok


def test_fsdp1_and_checkpoint_wrapper_segments_inside_names(tmp_path):
    saved = tiny(2, seed=1)
    raw = {}
    for k, v in saved.state_dict().items():
        if k.startswith("layers."):
            head, rest = k.split(".", 2)[:2], k.split(".", 2)[2]
            k = ".".join(head) + "._fsdp_wrapped_module._checkpoint_wrapped_module." + rest
        raw["_fsdp_wrapped_module." + k] = v
    path = tmp_path / "fsdp1.pt"
    torch.save(raw, path)
    model = tiny(2, seed=2)
    report = pc.load_into(model, path)
    assert report.stripped == ("_fsdp_wrapped_module.",)
    assert pc.diff(saved, model).ok


def test_own_child_called_module_is_not_mangled(tmp_path):
    class Holder(nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.module = tiny(2, seed=seed)

    saved = Holder(1)
    path = tmp_path / "holder.pt"
    torch.save(nn.DataParallel(saved).state_dict(), path)  # keys: module.module.*
    model = Holder(2)
    report = pc.load_into(model, path)
    assert report.stripped == ("module.",)
    assert pc.diff(saved, model).ok
    assert all(k.startswith("module.") for k in pc.schema(model))


# -- 4. strict=False never hides --------------------------------------------------------------

def test_strict_false_loads_what_matches_and_returns_the_difference(tmp_path):
    saved = tiny(4, seed=1)
    path = tmp_path / "short.pt"
    torch.save({k: v for k, v in saved.state_dict().items() if not k.startswith("layers.3.")}, path)
    model = tiny(4, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pc.CheckpointMismatch) as err:
        pc.load_into(model, path)
    assert "layers.3" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "strict load must copy nothing"
    report = pc.load_into(model, path, strict=False)
    assert not report.diff.ok
    assert report.diff.missing == sorted(k for k in before if k.startswith("layers.3."))
    assert torch.equal(model.layers[0].attn.weight, saved.layers[0].attn.weight)
    assert torch.equal(model.layers[3].attn.weight, before["layers.3.attn.weight"])


# -- 5. incomplete or damaged files -----------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_torch_file_is_a_clear_error_everywhere(tmp_path, fraction):
    path = tmp_path / "cut.pt"
    torch.save(tiny(2).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    for call in (lambda: pc.verify(path), lambda: pc.schema(path),
                 lambda: pc.diff(tiny(2), path), lambda: pc.load_into(tiny(2), path)):
        with pytest.raises(pc.CheckpointError) as err:
            call()
        assert str(path) in str(err.value)


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.safetensors"
    pc.save(tiny(2), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])
    with pytest.raises(pc.CheckpointError, match="cut.safetensors"):
        pc.verify(path)
    with pytest.raises(pc.CheckpointError, match="cut.safetensors"):
        pc.load_into(tiny(2), path)


def test_missing_tail_of_layers_reads_as_incomplete_when_the_stored_config_says_so(tmp_path):
    cfg = TinyConfig(num_hidden_layers=6)
    full = tiny(6)
    sd = {k: v for k, v in full.state_dict().items()
          if not (k.startswith("layers.4.") or k.startswith("layers.5."))}
    path = tmp_path / "interrupted.pt"
    pc.save(sd, path, config=cfg)
    d = pc.diff(tiny(6), path)
    assert "layers.4-5.*" in str(d)
    kinds = [n.kind for n in d.notes]
    assert "layer-count" in kinds or "missing" in kinds
    assert "incomplete" in kinds


def test_stored_schema_that_disagrees_with_tensors_fails_verify(tmp_path):
    import zipfile
    path = tmp_path / "lying.pt"
    pc.save(tiny(2), path, config=TinyConfig(num_hidden_layers=2))
    with zipfile.ZipFile(path) as z:
        (record,) = [n for n in z.namelist() if n.endswith("pytest_ckpt.json")]
        stored = json.loads(z.read(record))
    stored["schema"]["embed.weight"]["shape"] = [1, 1]
    forged = tmp_path / "forged.pt"
    torch.save(tiny(2).state_dict(), forged)
    with zipfile.ZipFile(forged, "a") as z:
        z.writestr(record.replace(record.split("/")[0], "forged", 1), json.dumps(stored))
    with pytest.raises(pc.CheckpointError, match="forged.pt"):
        pc.verify(forged)


def test_malicious_pickle_runs_nothing_and_names_the_global(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "payload": Evil()}, path)
    for call in (lambda: pc.load_into(tiny(2), path), lambda: pc.schema(path), lambda: pc.verify(path)):
        with pytest.raises(pc.CheckpointError) as err:
            call()
        assert err.value.kind == "unsafe"
        assert "system" in str(err.value) and "evil.pt" in str(err.value)
    assert not marker.exists()
