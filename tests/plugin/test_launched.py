"""pytest launched by torchrun: ddp and fsdp run on the launched world (gloo here), the ranks agree
on each outcome, and only rank 0 writes the summary and --ckpt-report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

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
'''

TESTS = '''
import pytest

import tinyproj


@pytest.mark.ckpt_roundtrip("plain", "ddp", "fsdp")
def test_roundtrip(ckpt):
    ckpt.roundtrip(tinyproj.tiny)


@pytest.mark.ckpt_roundtrip("ddp")
def test_rank_1_fails(ckpt):
    ckpt.roundtrip(tinyproj.tiny, load=tinyproj.load_fails_on_rank_1)
'''


def test_torchrun_pytest_runs_on_the_world_with_one_summary_and_names_the_failing_rank(pytester):
    pytester.makepyfile(tinyproj=PROJECT, test_world=TESTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pytester.path), os.environ.get("PYTHONPATH", "")])}
    for key in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "--log-dir", "logs", "-r", "3", "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:randomly", "--ckpt-report=report.json", "-rA"],
        cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 1, out.decode(errors="replace")[-3000:]
    logs = {rank: next((pytester.path / "logs").glob(f"*/attempt_0/{rank}/stdout.log")).read_text()
            for rank in (0, 1)}
    rank0, rank1 = logs[0], logs[1]
    assert "pytest-ckpt: rank 0 of a launched world of 2 (torchrun); ddp, fsdp and resume fsdp run on it, " \
           "backend gloo" in rank0
    for name in ("plain", "ddp", "fsdp"):
        assert f"PASSED test_world.py::test_roundtrip[ckpt-{name}]" in rank0 + rank1
    # rank 1 alone raised; both ranks fail the test, rank 0's report names rank 1 and its error
    assert ("[ddp] pytest-ckpt: failed on rank 1 of 2 (torchrun, backend gloo); rank 1: RuntimeError: this "
            "rank reads a stale copy of the checkpoint") in rank0
    assert "pytest-ckpt: failed on rank 1 of 2 (torchrun, backend gloo)" in rank1
    assert rank0.count("4 round trips: 3 passed, 1 failed, 0 skipped") == 1
    assert "round trips:" not in rank1 and "report written to" not in rank1  # one summary: rank 0's
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["summary"] == {"passed": 3, "failed": 1} and len(report["checks"]) == 4
