"""The ``fsdp`` round trip calls the project's save the way FSDP2 training does (issue 26 items 10, 11, 15):
a save that writes one file runs on rank 0 with the gathered state, a DCP save on every rank; what can be
decided before the ranks start is decided here; a rank's own error is the failure's first line."""

from __future__ import annotations

import os
import re
import time

import pytest
import torch
import torch.distributed as dist

import pytest_ckpt as pc
from pytest_ckpt.checks.variations.base import SaveJob
from pytest_ckpt.checks.variations.fsdp import EVERY_RANK, RANK_0, writes_on
from pytest_ckpt.processes import ranks
from tests.plugin import workers


def atomic_save(model, path):
    """The save the interrupted variation recommends (a temporary name, fsync, os.replace), slowed
    between write and rename so that two ranks writing one path would collide."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(model.state_dict(), f)
        f.flush()
        time.sleep(0.2)
        os.fsync(f.fileno())
    os.replace(tmp, path)


def racy_save(model, path):
    """An FSDP-aware save that forgot ``if rank == 0``: every rank gathers the full state and writes it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    print(f"rank {dist.get_rank()} saving")  # needs the ranks' group: it runs on every rank
    atomic_save_state(get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)), path)


def atomic_save_state(state, path):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        time.sleep(0.2)
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_tiny(path):
    model = workers.tiny()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def test_an_atomic_torch_save_runs_on_rank_0_with_the_gathered_state_and_passes_five_times_out_of_five():
    # two ranks on one path raced on its .tmp name: red 1 in 5, and 3 in 3 with the fsync delay
    for _ in range(5):
        report = pc.check_roundtrip(workers.tiny, variation="fsdp", save=atomic_save, load=load_tiny)
        assert report.ok and report.saved_with == (f"{__name__}.atomic_save on rank 0, with the full state "
                                                   "gathered from 2 FSDP2 ranks")


def test_a_save_every_rank_runs_on_one_path_fails_saying_so_in_the_first_line():
    with pytest.raises(RuntimeError) as failure:
        pc.check_roundtrip(workers.tiny, variation="fsdp", save=racy_save, load=load_tiny)
    first = str(failure.value).splitlines()[0]
    assert re.fullmatch(
        r"fsdp: rank [01] of 2 failed: SharedPath: FileNotFoundError: \[Errno 2\] No such file or directory: "
        r"'\S+/dcp\.tmp' -> '\S+/dcp': both ranks ran your save on one path \(dcp\), and they collided there\. "
        r"Your save needs the ranks' process group, so under FSDP2 every rank runs it: write the checkpoint on "
        r"rank 0 alone \(if dist\.get_rank\(\) == 0:, after gathering the full state dict\), or each rank its own "
        r"files with torch\.distributed\.checkpoint \(exit codes \[.*\]\)", first), first


def test_a_model_fsdp2_refuses_is_skipped_before_any_rank_starts(monkeypatch):
    def no_ranks(*args, **kw):
        raise AssertionError("ranks started for a model FSDP2 refuses")

    monkeypatch.setattr(ranks, "run_ranks", no_ranks)  # no rank starts: the time it takes is a bench row
    with pytest.raises(pc.VariationUnavailable, match=r"^FSDP2 cannot shard this model: fully_shard doesn't "
                                                      r"support scalar parameters\. Change logit_scale to a 1D "
                                                      r"tensor with numel equal to 1\.$"):
        pc.check_roundtrip(workers.scalar_parameter, variation="fsdp")


def test_where_the_save_runs_is_decided_by_what_it_writes(tmp_path):
    """A DCP directory: every rank; a torch file: rank 0 (gathered); a save that needs the ranks' group:
    every rank (a save_pretrained directory: tests/frameworks/test_hf_variation.py). The probe's files go."""
    def job(save):
        return SaveJob(variation="fsdp", factory=workers.tiny, save=save, directory=tmp_path)

    assert writes_on(job(workers.save_model_only), tmp_path / "p1") == EVERY_RANK
    assert writes_on(job(atomic_save), tmp_path / "p2") == RANK_0
    assert writes_on(job(racy_save), tmp_path / "p3") == EVERY_RANK
    assert sorted(tmp_path.iterdir()) == []
