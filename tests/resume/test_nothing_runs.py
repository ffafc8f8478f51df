"""Nothing the project's save wrote runs when a resume difference is explained (API §4.1 "Nothing
runs"): the files are read by the safe readers, in this process and under ``fresh-process``. The
payload is real (``os.system("touch MARKER")``); each test checks the marker never appears."""

from __future__ import annotations

import pytest

import pytest_ckpt as pc
from tests.resume import payload_loop as L

@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARKER", str(path))
    return path


def _mismatch(save, load, **kw) -> pc.ResumeMismatch:
    with pytest.raises(pc.ResumeMismatch) as info:
        pc.check_resume(L.start, L.step, save=save, load=load, steps=4, at=2, **kw)
    return info.value


@pytest.mark.parametrize("fresh", [False, True], ids=["in-process", "fresh-process"])
def test_the_optimizer_beside_a_payload_is_found_and_nothing_runs(marker, fresh, tmp_path):
    # under fresh-process the resumed half runs in a child; the explanation still runs here
    kw = {"fresh_process": True, "workdir": tmp_path / "work"} if fresh else {}
    err = _mismatch(L.save, L.load_forgets_optimizer, **kw)
    assert not marker.exists(), "explaining the resume unpickled optimizer.pt freely: the payload ran"
    [note] = err.report.notes
    assert note.kind == "resume-optimizer"
    # the file was searched on stubs: its optimizer state is found where the save put it
    assert 'the checkpoint holds it at ["opt"] in optimizer.pt, but load does not restore it' in note.text


def test_weights_under_a_prefix_beside_a_payload_file_are_explained_and_nothing_runs(marker):
    err = _mismatch(L.save_prefixed, L.load_strict_false)
    assert not marker.exists(), "looking for the weights' prefix unpickled extra.pt freely: the payload ran"
    [note] = err.report.notes
    assert note.kind == "resume-weights"
    assert "carry the prefix 'module.', which the model's names do not" in note.text


def test_a_state_that_only_a_refused_file_may_hold_is_not_called_unsaved(marker):
    err = _mismatch(L.save_generator_beside_payload, L.load_forgets_the_data_order)
    assert not marker.exists()
    [note] = [n for n in err.report.notes if 'run["data"]' in n.text]
    # data.pt was read on stubs (its tensors opaque): "not in the checkpoint" would be a guess
    assert "not in the checkpoint" not in note.text, note.text
