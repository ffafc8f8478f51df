"""The rank workers are started once and reused; a dead one is replaced; none outlives pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from torch import nn

from pytest_ckpt.checks.variations import VARIATIONS
from pytest_ckpt.processes import pool, scratch
from pytest_ckpt.checks.variations.base import SaveJob
from tests.plugin import workers


def fsdp_save(directory, factory=workers.tiny):
    directory.mkdir()
    return VARIATIONS["fsdp"].load().produce(SaveJob(variation="fsdp", factory=factory, directory=directory))


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_workers_are_reused_forget_the_last_project_and_a_killed_one_is_replaced(tmp_path, monkeypatch):
    fsdp_save(tmp_path / "first")
    ranks = pool.shared().pids()[:2]
    # two projects with a module of the same name: the second job must not see the first's
    for name, out in (("a", 4), ("b", 3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "proj.py").write_text(
            f"from torch import nn\n\ndef build():\n    return nn.Linear(4, {out})\n")
        monkeypatch.delitem(sys.modules, "proj", raising=False)
        monkeypatch.syspath_prepend(str(tmp_path / name))
        import proj

        saved = fsdp_save(tmp_path / f"proj-{name}", factory=proj.build)
        assert isinstance(saved.reference, nn.Module) and saved.reference.weight.shape == (out, 4)
    assert pool.shared().pids()[:2] == ranks  # the same two processes did all three jobs

    killed = pool.shared().workers[1]
    os.kill(ranks[1], signal.SIGKILL)  # a worker that crashed between two tests
    killed.proc.wait(timeout=10)  # its threads gone too (/proc says Z before they are)
    saved = fsdp_save(tmp_path / "after-kill")
    assert sorted(p.name for p in saved.path.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    now = pool.shared().pids()[:2]
    assert now[0] == ranks[0] and now[1] != ranks[1] and _gone(ranks[1])


def test_no_worker_outlives_a_pytest_killed_with_sigkill_and_the_next_run_removes_its_directory(
        pytester, monkeypatch):
    pids = pytester.path / "pids"
    tmp = pytester.path / "tmp"  # the run's TMPDIR, where its pool keeps the workers' files
    tmp.mkdir()
    pytester.makepyfile(test_hold=f"""
        import time
        from pathlib import Path
        from pytest_ckpt.processes import pool

        def test_hold():
            workers = pool.shared().take(2)
            while not all(w.ready.exists() for w in workers):  # torch imported: each in its job loop
                time.sleep(0.05)
            Path({str(pids)!r}).write_text(" ".join(str(w.pid) for w in workers))
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hold.py"],
                            cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not pids.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids.exists(), "the pytest run never started its rank workers"
        started = [int(p) for p in pids.read_text().split()]
        assert len(started) == 2 and not any(_gone(p) for p in started)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(_gone(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(p) for p in started), f"rank workers {started} outlived the killed pytest"

        # no cleanup ran: its directory is left, named by its pid; the next run's pool removes it, and
        # never the directory of a run that is alive (this one)
        left = [d.name for d in tmp.iterdir()]
        assert len(left) == 1 and left[0].startswith(f"pytest-ckpt-ranks-{proc.pid}-"), left
        live = tmp / f"pytest-ckpt-ranks-{os.getppid()}-abcd1234"
        live.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        mine = scratch.owned_dir("ranks")
        assert sorted(d.name for d in tmp.iterdir()) == sorted([live.name, mine.name])
        assert mine.name.startswith(f"pytest-ckpt-ranks-{os.getpid()}-")
    finally:
        for p in (proc.pid, *([int(x) for x in pids.read_text().split()] if pids.exists() else [])):
            try:
                os.killpg(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait(timeout=10)


pytest_plugins = ["pytester"]
