"""The ``interrupted`` check: real saves killed for real at each file boundary, their real loads judged."""

from __future__ import annotations

import re
import time

import pytest
import torch
from torch import nn

import pytest_ckpt as pc
from pytest_ckpt.checks.variations.base import SaveJob
from pytest_ckpt.checks.variations.interrupted import INTERRUPTED, InterruptedSaveError
from pytest_ckpt.errors import InterruptedMismatch, VariationUnavailable
from pytest_ckpt.processes import ranks as launcher
from tests.checks import crash_savers as savers
from tests.plugin import workers


def check(save, load=None, factory=savers.tiny, tmp_path=None, **kw):
    job = SaveJob("interrupted", factory, save=save, directory=tmp_path, **kw)
    return INTERRUPTED.check(job, load, loaded_with="the load")


def test_an_in_place_save_rescued_by_latest_complete_passes(tmp_path):
    report = check(savers.save_steps, savers.load_latest, tmp_path=tmp_path)
    assert report.ok and report.counts()["pass"] == len(report.outcomes) == 2
    assert [o.where for o in report.outcomes] == ["killed before torch.save(.../step-2.pt)",
                                                  "torn step-2.pt at 50%"]


def test_a_load_that_starts_from_scratch_is_lost_work(tmp_path):
    with pytest.raises(InterruptedMismatch) as info:
        check(savers.save_in_place, savers.load_or_fresh, tmp_path=tmp_path)
    report = info.value.report
    assert report.counts() == {"pass": 1, "hard fail": 0, "silent divergence": 0, "lost work": 1}
    assert "[lost work] torn model.pt at 50%: your load returned a model of neither checkpoint" in str(info.value)
    assert "pc.latest_complete(directory)" in str(info.value)


def test_a_declared_cast_is_honoured_by_the_default_load_and_the_judge(tmp_path):
    # minimind: .half() weights to .tmp, then os.replace; loaded into its float32 model
    report = pc.check_interrupted(savers.MiniMind, save=savers.save_half_atomic, dtype=torch.float16,
                                  workdir=tmp_path)
    assert report.ok and report.counts()["pass"] == len(report.outcomes) == 3, str(report)


def test_a_save_that_writes_several_files_in_place_is_told_no_check_on_load_can_help(tmp_path):
    # save_pretrained into the checkpoint's own directory: killed between shards, the new first shard sits
    # beside the old second one, each whole; pc.verify cannot tell
    from pytest_ckpt.checks.variations.crash_report import SILENT, InterruptedReport, Outcome, written_in_place
    from pytest_ckpt.processes.boundaries import Boundary

    old, new = tmp_path / "base" / "ckpt", tmp_path / "complete" / "ckpt"
    for root in (old, new):
        root.mkdir(parents=True)
        for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "index.json"):
            (root / name).touch()
    written = [Boundary("before", "safetensors.torch.save_file", (str(new / f"model-0000{i}-of-00002.safetensors"),))
               for i in (1, 2)] + [Boundary("before", "open", (str(new / "index.json"),))]
    in_place = written_in_place(written, new, old)
    assert in_place == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "index.json")
    assert written_in_place(written, new, tmp_path / "nothing-before") == ()
    mixed = [Outcome("killed before safetensors.torch.save_file(.../model-00002-of-00002.safetensors)", SILENT,
                     "your load returned a model of neither checkpoint")]
    files = tuple(sorted(p.name for p in new.iterdir()))
    text = str(InterruptedReport("save", "load", mixed, files, in_place=in_place))
    assert text.splitlines()[-1] == (
        "  fix: your save writes the checkpoint's files over the previous one's in place "
        "(model-00001-of-00002.safetensors, model-00002-of-00002.safetensors and 1 more): a kill leaves new and "
        "old files side by side, each whole, which no check on load (pc.verify included) can tell from one "
        "checkpoint; save each checkpoint to its own directory and resume from pc.latest_complete(directory), "
        "or write into a staging directory and rename it into place")
    # written elsewhere (a staging directory renamed into place): the index and pc.verify still help
    assert "verify it on load (pc.verify)" in str(InterruptedReport("save", "load", mixed, files))


def test_a_save_that_writes_nothing_is_named(tmp_path):
    with pytest.raises(InterruptedSaveError, match=re.escape("your save tests.checks.crash_savers."
                                                             "save_nothing(model, path) wrote nothing at")):
        check(savers.save_nothing, tmp_path=tmp_path)


def test_an_unimportable_save_cannot_run_and_says_which(tmp_path):
    def closure(model, path):
        torch.save(model.state_dict(), path)

    with pytest.raises(VariationUnavailable, match="the save .*closure is a lambda or a closure"):
        check(closure, tmp_path=tmp_path)


def test_a_hanging_save_is_killed_with_its_children(tmp_path, monkeypatch):
    started = workers.record_started(monkeypatch, launcher.pool)
    monkeypatch.setenv("CRASH_PIDS", str(tmp_path / "pids"))
    (tmp_path / "pids").mkdir()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="interrupted: the 1 rank did not finish within 5s"):
        check(savers.save_hangs_when_killed, tmp_path=tmp_path / "run", fsdp_timeout=5)
    assert time.monotonic() - t0 < 40
    forked = [int(p.name) for p in (tmp_path / "pids").iterdir()]  # the kill children that hung
    deadline = time.monotonic() + 10  # SIGKILL to the process group lands asynchronously
    while any(workers.alive(pid) for pid in started + forked) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(started) == 1 and not any(workers.alive(pid) for pid in started + forked)


# -- latest_complete ------------------------------------------------------------------------------

def test_latest_complete_skips_newer_torn_and_incomplete_checkpoints(tmp_path):
    pc.save(nn.Linear(2, 2), tmp_path / "step-100.pt")
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "step-200.pt")
    with open(tmp_path / "step-200.pt", "r+b") as f:
        f.truncate(100)
    shards = tmp_path / "step-300"
    shards.mkdir()
    (shards / "model-00001-of-00002.safetensors").write_bytes(b"")
    (tmp_path / ".step-400.pt.abcdefgh.tmp").write_bytes(b"partial")  # a killed pc.save's debris

    found = pc.latest_complete(tmp_path)
    assert found.path == tmp_path / "step-100.pt" and found
    assert [(p.name, why.split(":")[0]) for p, why in found.skipped] == [
        ("step-300", "incomplete"), ("step-200.pt", "truncated")]
    assert str(found).splitlines()[0].endswith(f"the newest complete checkpoint in {tmp_path}")
    assert pc.latest_complete(tmp_path, pattern="step-2*").path is None


def test_latest_complete_of_a_missing_directory_names_it(tmp_path):
    with pytest.raises(pc.CheckpointError, match="latest_complete needs the directory"):
        pc.latest_complete(tmp_path / "nope")
