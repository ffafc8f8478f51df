"""Golden schema snapshot files: format, comparison, writes only on update."""

import json

import pytest

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
