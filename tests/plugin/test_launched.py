"""pytest launched by torchrun: ddp, fsdp, reshard-N and the resume fsdp variations run on the launched
world (gloo here; reshard on its first ranks), the ranks agree on each outcome, and only rank 0 writes
the summary and --ckpt-report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow

PROJECT = '''
import torch.distributed as dist
from torch import nn

import pytest_ckpt as pc


def tiny():
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def load_fails_on_rank_1(path):
    if dist.get_rank() == 1:
        raise RuntimeError("this rank reads a stale copy of the checkpoint")
    model = tiny()
    pc.load_into(model, path)
    return model


def save_fails_on_rank_1(model, path):
    """Rank 1 raises before DCP's first collective: ranks 0 and 2 wait for it there."""
    import torch.distributed.checkpoint as dcp

    if dist.get_rank() == 1:
        raise OSError("rank 1: no space left on device")
    dcp.save(model.state_dict(), checkpoint_id=str(path))
'''

TESTS = '''
import pytest

import tinyproj
from tests.plugin import reshard_loop as loop
from tests.plugin import workers


@pytest.mark.ckpt_roundtrip("fsdp")
def test_a_rank_fails_and_the_others_wait(ckpt):
    ckpt.roundtrip(tinyproj.tiny, save=tinyproj.save_fails_on_rank_1)


@pytest.mark.ckpt_roundtrip("plain", "ddp", "fsdp")
def test_roundtrip(ckpt):
    ckpt.roundtrip(tinyproj.tiny)


@pytest.mark.ckpt_roundtrip("ddp")
def test_rank_1_fails(ckpt):
    ckpt.roundtrip(tinyproj.tiny, load=tinyproj.load_fails_on_rank_1)


@pytest.mark.ckpt_roundtrip("reshard-3", "reshard-1")
def test_reshard(ckpt):
    ckpt.roundtrip(workers.odd_tied)


@pytest.mark.ckpt_roundtrip("reshard-3")
def test_wrong_reshard(ckpt):
    ckpt.roundtrip(workers.odd_tied, save=workers.save_model_only, load_sharded=workers.load_shards_last_rank_first)


@pytest.mark.ckpt_resume("fsdp-reshard-1")
def test_resume_on_1(ckpt):
    ckpt.resume(loop.start, loop.step, save=loop.save, load=loop.load, steps=4, at=2)


@pytest.mark.ckpt_resume("fsdp-reshard-3")
def test_resume_per_rank_position(ckpt):
    ckpt.resume(loop.start, loop.step_per_rank, save=loop.save_per_rank, load=loop.load_per_rank, steps=4, at=2)
'''


def test_torchrun_pytest_runs_on_the_world_with_one_summary_and_names_the_failing_rank(pytester):
    """3 ranks: fsdp on all of them, reshard-3/-1 and fsdp-reshard-3/-1 on the first 2 then the first 3
    (or 1); failures on any rank fail every rank, naming the rank whose own code raised."""
    pytester.makepyfile(tinyproj=PROJECT, test_world=TESTS)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pytester.path), repo, os.environ.get("PYTHONPATH", "")])}
    for key in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
         "--log-dir", "logs", "-r", "3", "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:randomly", "--ckpt-report=report.json", "-rA", "-W", "ignore",
         # the ranks left waiting by the failing one give up after 10 s, not 180
         "-o", "ckpt_fsdp_timeout=10"],
        cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 1, out.decode(errors="replace")[-3000:]
    logs = {rank: next((pytester.path / "logs").glob(f"*/attempt_0/{rank}/stdout.log")).read_text()
            for rank in (0, 1, 2)}
    rank0, rank1, rank2 = logs[0], logs[1], logs[2]
    assert ("pytest-ckpt: rank 0 of a launched world of 3 (torchrun); ddp, fsdp, reshard and the resume fsdp "
            "variations run on it, backend gloo") in rank0
    passed = ["test_roundtrip[ckpt-plain]", "test_roundtrip[ckpt-ddp]", "test_roundtrip[ckpt-fsdp]",
              "test_reshard[ckpt-reshard-3]", "test_reshard[ckpt-reshard-1]", "test_resume_on_1[resume-fsdp-reshard-1]"]
    failed = ["test_a_rank_fails_and_the_others_wait[ckpt-fsdp]", "test_rank_1_fails[ckpt-ddp]",
              "test_wrong_reshard[ckpt-reshard-3]", "test_resume_per_rank_position[resume-fsdp-reshard-3]"]
    for log in (rank0, rank1, rank2):  # every rank ran every test and agrees on each outcome
        for name in passed:
            assert f"PASSED test_world.py::{name}" in log, log[-3000:]
        for name in failed:
            assert f"FAILED test_world.py::{name}" in log, log[-3000:]
    # rank 1's own error is the cause; ranks 0 and 2 waited for it, and the world went on (fsdp passed after)
    assert ("RuntimeError: fsdp: rank 1 of 3 failed: OSError: rank 1: no space left on device; ranks 0 and 2 "
            "then waited for it in a collective until the 10s timeout (backend gloo)") in rank0
    # rank 1 alone raised; every rank fails the test, rank 0's report names rank 1 and its error
    assert ("[ddp] pytest-ckpt: failed on rank 1 of 3 (torchrun, backend gloo); rank 1: RuntimeError: this "
            "rank reads a stale copy of the checkpoint") in rank0
    assert "pytest-ckpt: failed on rank 1 of 3 (torchrun, backend gloo)" in rank1
    # the reshard load on the world's 3 ranks that puts the shards together by rank is named
    assert ("[reshard] 9 tensors hold the saved rows in another order after loading on 3 ranks "
            "(blocks.0.bias: rows 0-1 hold saved rows 3-4)") in rank0
    assert ("[resume-data] the data position does not carry from 2 to 3 ranks: over steps 3-4 ranks 0, 1 and 2 "
            "train on 6 samples the uninterrupted run never trained on") in rank0
    assert rank0.count("8 round trips: 5 passed, 3 failed, 0 skipped") == 1
    assert rank0.count("2 resume checks: 1 passed, 1 failed, 0 skipped") == 1
    for log in (rank1, rank2):  # one summary: rank 0's
        assert "round trips:" not in log and "report written to" not in log
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["summary"] == {"passed": 6, "failed": 4} and len(report["checks"]) == 10


def test_a_world_smaller_than_the_variation_skips_it_naming_the_ranks(monkeypatch):
    """Under torchrun with 2 ranks, reshard-3 and fsdp-reshard-3 cannot load on 3: skipped, saying how."""
    from pytest_ckpt.checks.variations import VariationUnavailable
    from pytest_ckpt.processes.ranks import require_ranks

    for key, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        monkeypatch.setenv(key, value)
    require_ranks(2, "reshard-1")  # fits: nothing raised
    with pytest.raises(VariationUnavailable) as info:
        require_ranks(3, "reshard-3")
    assert str(info.value) == ("reshard-3 runs on 3 ranks; this launched world has 2: launch torchrun with "
                               "--nproc-per-node 3 or more, or run it in a pytest without torchrun")


def test_xdist_under_torchrun_is_a_usage_error_not_a_hang(pytester, monkeypatch):
    """Every rank must run the same tests in the same order: -n would split them among workers."""
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    env = {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-ckpt: under torchrun (rank 1 of 2) every rank must run the same tests "
                                 "in the same order, as one pytest: leave out -n/--dist (pytest-xdist)*"])


def _stale_world(monkeypatch) -> None:
    """A shell inside a torchrun job (a PyTorchJob pod): the variables of a world of 2, no rank 1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
        monkeypatch.setenv(key, value)


def test_a_stale_torchrun_environment_costs_a_suite_without_distributed_checks_nothing(pytester, monkeypatch):
    """Nothing waits for rank 1 unless a check needs the world (it used to be 180 s in pytest_unconfigure)."""
    pytester.makepyfile(test_plain="""
        import pytest
        from torch import nn

        def test_unrelated():
            assert True

        @pytest.mark.ckpt_roundtrip("plain")
        def test_roundtrip(ckpt):
            ckpt.roundtrip(lambda: nn.Linear(2, 2))
    """)
    _stale_world(monkeypatch)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=150)  # was 180 s and more
    result.assert_outcomes(passed=2)
    assert time.monotonic() - started < 150


def test_a_missing_peer_is_a_usage_error_naming_the_variables_within_seconds(pytester, monkeypatch):
    pytester.makepyfile(test_ddp="""
        import pytest
        from torch import nn

        @pytest.mark.ckpt_roundtrip("ddp", "compile+ddp")  # the first stops the run: the second never waits
        def test_roundtrip(ckpt):
            ckpt.roundtrip(lambda: nn.Linear(2, 2))
    """)
    _stale_world(monkeypatch)
    monkeypatch.setenv("PYTEST_CKPT_RENDEZVOUS_TIMEOUT", "2")
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=150)  # was INTERNALERROR after 180 s
    assert time.monotonic() - started < 150
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    port = os.environ["MASTER_PORT"]
    result.stdout.fnmatch_lines([
        f"*pytest-ckpt: WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT={port} say this pytest is rank 0 of "
        "a torchrun world of 2, but the other ranks did not meet it within 2s (*): run the same pytest on every "
        "rank (torchrun --nproc-per-node 2 -m pytest -p no:xdist), or unset WORLD_SIZE, RANK and MASTER_ADDR to "
        "run it alone*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
