"""Golden schema snapshot files: format, comparison, writes only on update."""

import json

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.formats import golden
from pytest_ckpt.plugin import snapshot
from tests.tinymodel import TinyConfig, tiny


def test_missing_snapshot_fails_and_writes_nothing(tmp_path):
    path = tmp_path / "snap.json"
    result = snapshot.check(tiny(2), path, update=False)
    assert result.outcome == "missing" and "--ckpt-update" in result.message
    assert not path.exists()


def test_update_writes_a_stable_reviewable_file(tmp_path):
    path = tmp_path / "snap.json"
    assert snapshot.check(tiny(2), path, update=True).outcome == "written"
    text = path.read_text()
    data = json.loads(text)
    assert data["format_version"] == golden.FORMAT_VERSION
    assert data["config"]["num_hidden_layers"] == 2
    lines = [l for l in text.splitlines() if '"shape"' in l]
    assert len(lines) == len(data["tensors"])  # one tensor per line
    names = [json.loads("{" + l.strip().rstrip(",") + "}").popitem()[0] for l in lines]
    assert names == sorted(names)
    # Writing the same schema again gives the same bytes: a PR diff shows only real changes.
    assert snapshot.check(tiny(2, seed=5), path, update=True).outcome == "match"
    assert path.read_text() == text


def test_changed_model_fails_naming_the_block_and_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "snap.json"
    snapshot.check(tiny(4), path, update=True)
    before = path.read_bytes()
    result = snapshot.check(tiny(3), path, update=False)
    assert result.outcome == "differs"
    assert "layers.3" in result.message and "--ckpt-update" in result.message
    assert "num_hidden_layers" in result.message
    assert path.read_bytes() == before
    assert snapshot.check(tiny(3), path, update=True).outcome == "written"
    assert snapshot.check(tiny(3), path, update=False).outcome == "match"


def test_snapshot_of_a_checkpoint_file_matches_the_model(tmp_path):
    ckpt = pc.save(tiny(2), tmp_path / "v1.safetensors", config=TinyConfig(num_hidden_layers=2))
    path = tmp_path / "snap.json"
    snapshot.check(tiny(2), path, update=True)
    assert snapshot.check(ckpt, path, update=False).outcome == "match"


def test_a_corrupt_snapshot_is_a_clear_error(tmp_path):
    path = tmp_path / "snap.json"
    path.write_text("{not json")
    with pytest.raises(pc.CheckpointError, match="snap.json"):
        snapshot.check(tiny(2), path, update=False)


def test_stale_snapshots_are_listed(tmp_path):
    used = tmp_path / "a.json"
    stale = tmp_path / "b.json"
    snapshot.check(tiny(2), used, update=True)
    snapshot.check(tiny(2), stale, update=True)
    assert snapshot.stale_snapshots(tmp_path, {used.resolve()}) == [stale]


def test_a_snapshot_is_called_a_snapshot_and_has_one_fix(tmp_path):
    # the rules' wording and fixes are for checkpoints; against a golden file the actual
    # side is "the snapshot", and the fix is to update it or undo the model change
    path = tmp_path / "snap.json"
    snapshot.check(tiny(3), path, update=True)
    result = snapshot.check(tiny(2), path, update=False)
    assert result.outcome == "differs"
    lines = result.message.splitlines()
    assert "[layer-count] layers.2.*: 1 block unexpected: the snapshot has 3 blocks, the model 2" in lines[2]
    assert "checkpoint" not in result.message
    assert [l.strip() for l in lines if "fix:" in l] == [
        "fix: run pytest --ckpt-update if this change is intended; if not, undo this change to the model"]


def test_a_training_state_with_several_models_pins_each_and_a_change_to_any_fails_naming_it(tmp_path):
    # VAR's trainer state: the trained model (16 tensors) beside the frozen, larger VAE (41). Pinning only
    # the largest let a depth change of the trained model pass with a warning
    from tests import varstate

    state = varstate.save(tmp_path / "ar-ckpt-last.pth", depth=2)
    deeper = varstate.save(tmp_path / "deeper.pth", depth=3)
    path = tmp_path / "snap.json"
    assert snapshot.check(state, path, update=True).outcome == "written"
    models = json.loads(path.read_text())["models"]
    assert [(m["located_at"], len(m["tensors"])) for m in models] == [
        (["trainer", "var_wo_ddp"], 16), (["trainer", "vae_local"], 41)]
    assert snapshot.check(state, path, update=False).outcome == "match"
    before = path.read_bytes()
    result = snapshot.check(deeper, path, update=False)
    assert result.outcome == "differs" and path.read_bytes() == before
    lines = result.message.splitlines()
    assert lines[0] == f"schema differs from golden snapshot {path} (1 of the 2 models it pins):"
    assert lines[1].startswith("at trainer.var_wo_ddp: ")
    assert "[layer-count] blocks.2.*" in lines[2] and "vae_local" not in result.message
    # a model the snapshot pins that the file no longer holds is a change too
    torch.save({"trainer": {"var_wo_ddp": varstate.VAR(2).state_dict()}}, tmp_path / "no-vae.pth")
    gone = snapshot.check(tmp_path / "no-vae.pth", path, update=False)
    assert gone.outcome == "differs"
    assert "at trainer.vae_local: the snapshot pins a model there, the file holds none" in gone.message
    # the models each read back where the file held them: like= the model finds it
    assert pc.diff(varstate.VAR(2), path, values=False).ok


def test_a_snapshot_that_pins_one_model_of_several_still_reads_and_warns_until_updated(tmp_path):
    # written before every model was pinned: one "tensors" mapping, the largest model (the VAE)
    from tests import varstate

    state = varstate.save(tmp_path / "ar-ckpt-last.pth", depth=2)
    deeper = varstate.save(tmp_path / "deeper.pth", depth=3)
    path = tmp_path / "snap.json"
    path.write_text(golden.render(pc.schema(varstate.VAE()).to_dict()))
    with pytest.warns(snapshot.SnapshotWarning, match=r"2 models in .*not trainer\.var_wo_ddp.*--ckpt-update to pin each"):
        assert snapshot.check(deeper, path, update=False).outcome == "match"
    assert snapshot.check(state, path, update=True).outcome == "written"  # now it pins each
    assert len(json.loads(path.read_text())["models"]) == 2
    assert snapshot.check(deeper, path, update=False).outcome == "differs"


def test_like_pins_the_one_model_it_names(tmp_path):
    from tests import varstate

    state = varstate.save(tmp_path / "ar-ckpt-last.pth", depth=2)
    deeper = varstate.save(tmp_path / "deeper.pth", depth=3)
    records = []
    snap = snapshot.CkptSnapshot(test_file=tmp_path / "test_var.py", test_name="test_arch",
                                 snapshot_dir="__ckpt_snapshots__", update=True,
                                 record=records.append)
    snap.assert_match(state, like=varstate.VAR(2))
    written = json.loads(snap.path().read_text())
    assert set(written["tensors"]) == set(varstate.VAR(2).state_dict())
    snap = snapshot.CkptSnapshot(test_file=tmp_path / "test_var.py", test_name="test_arch",
                                 snapshot_dir="__ckpt_snapshots__", update=False,
                                 record=records.append)
    with pytest.raises(snapshot.SnapshotMismatch, match=r"\[layer-count\] blocks\.2\.\*"):
        snap.assert_match(deeper, like=varstate.VAR(3))
    assert [r["outcome"] for r in records] == ["written", "differs"]


def test_a_model_moved_under_an_attribute_is_a_change_to_the_snapshot(tmp_path):
    # pc.diff undoes an attribute prefix between a model and a checkpoint (a LightningModule's
    # self.model); a snapshot pins names, so the same move must show
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = tiny(2)

    path = tmp_path / "snap.json"
    snapshot.check(tiny(2), path, update=True)
    result = snapshot.check(Holder(), path, update=False)
    assert result.outcome == "differs"
    assert pc.diff(Holder(), tiny(2)).ok  # between models the prefix is undone
