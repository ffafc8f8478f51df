"""Children die with their parent, however it dies: a SIGKILL runs no cleanup, so the child must notice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.plugin import workers

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

#: a parent that starts one child the way the pool and the fresh process do, prints its pid, and waits
PARENT = """
import sys, time
from pathlib import Path
from pytest_ckpt.processes import children

child = children.spawn([sys.executable, "-c", sys.argv[1]], Path(sys.argv[2]))
print(child.pid, flush=True)
time.sleep(600)
"""

CHILD = """
from pytest_ckpt.processes import children
if {pipe_only}:
    children.parent_death_signal = lambda: False  # as where the kernel has no parent-death signal
children.die_with_parent()
import time
time.sleep(600)
"""


@pytest.mark.parametrize("pipe_only", [False, True], ids=["parent-death-signal", "pipe-watch"])
def test_a_child_dies_with_its_parent_killed_with_sigkill(tmp_path, pipe_only):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD.format(pipe_only=pipe_only), str(tmp_path / "log")],
                              stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.5)  # the child is in its sleep, its watch started
        assert workers.alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while workers.alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not workers.alive(child), (tmp_path / "log").read_text()
    finally:  # torn down also when the test failed
        _kill_sessions(parent, child)


RESUME_LOOP = '''
import os
import sys
import time
from pathlib import Path

import torch


def start():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    return {"model": model, "opt": torch.optim.SGD(model.parameters(), lr=0.1)}


def step(run):
    loss = run["model"](torch.ones(1, 2)).sum()
    loss.backward()
    run["opt"].step()
    run["opt"].zero_grad()
    return loss


def save(run, path):
    torch.save(run["model"].state_dict(), path)


def load(run, path):
    if sys.argv[0].endswith("child.py"):  # the resumed half, in the fresh process: hold it there
        Path(os.environ["CHILD_PID"]).write_text(str(os.getpid()))
        time.sleep(600)
    run["model"].load_state_dict(torch.load(path, weights_only=True))
'''


def test_the_fresh_process_child_dies_with_a_pytest_killed_with_sigkill(pytester):
    """It used to run to its end: its own session, nothing watching the parent."""
    pytester.makepyfile(loop=RESUME_LOOP, test_resume=textwrap.dedent("""
        import pytest
        import loop

        @pytest.mark.ckpt_resume("fresh-process")
        def test_resume(ckpt):
            ckpt.resume(loop.start, loop.step, save=loop.save, load=loop.load, steps=2)
    """))
    marker = pytester.path / "child.pid"
    env = {**os.environ, "CHILD_PID": str(marker), "PYTHONPATH": os.pathsep.join([str(pytester.path), str(REPO)])}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_resume.py"],
                            cwd=pytester.path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    child = None
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the resumed half never started in its fresh process"
        child = int(marker.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while workers.alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not workers.alive(child), f"the fresh process {child} outlived the killed pytest"
    finally:  # torn down also when the test failed
        _kill_sessions(proc, child)


def _kill_sessions(proc: subprocess.Popen, child: int | None) -> None:
    """Kill the started process's session and the child's (each leads its own), then reap."""
    for pid in (proc.pid, child):
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait(timeout=10)
