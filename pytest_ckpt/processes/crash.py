"""Crash injection: a save run once per file boundary, each run in a forked child that its
:class:`~.boundaries.Tracer` kills at that boundary (the kill is real: ``os._exit``, no cleanup).

Runs in a process that exists to be killed from (the ``interrupted`` check's child): the forks copy it
whole, the project's imported modules and the models included. In ``WORKDIR``, ``kill-K/`` is what
the kill at boundary ``K`` left, ``kill-K.log`` the traceback of a save that raised before it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .boundaries import KILLED, Tracer
from .children import parent_death_signal

#: a kill child whose save returned before reaching its boundary (the save is not deterministic)
NOT_REACHED = 5
#: a kill child whose save raised before its boundary
RAISED = 6


def kill_each(count: int, workdir: Path, base: Path, name: str, save: Callable, model: Any, kw: dict, *,
              jobs: int, timeout: float) -> dict[int, str]:
    """``save(model, kill-K/NAME, **kw)`` over a copy of ``base`` for every boundary ``K < count``, each
    in a forked child killed at that boundary, ``jobs`` at a time, each given ``timeout`` seconds;
    ``{K: how it ended}`` ("killed", "not reached", "raised", "timed out after ...")."""
    sys.stdout.flush()
    sys.stderr.flush()
    running: dict[int, tuple[int, float]] = {}
    status: dict[int, str] = {}
    pending = list(range(count))
    while pending or running:
        while pending and len(running) < max(1, jobs):
            k = pending.pop(0)
            pid = os.fork()
            if pid == 0:  # the kill child: never returns
                code = 1
                parent_death_signal()  # a save that hangs dies with the process that waits for it
                try:
                    code = _killed_save(k, workdir, base, name, save, model, kw)
                finally:
                    os._exit(code)
            running[pid] = (k, time.monotonic())
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for pid, (k, started) in list(running.items()):
                if time.monotonic() - started > timeout:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    status[k] = f"timed out after {timeout:g}s"
                    del running[pid]
            time.sleep(0.005)
            continue
        k, _ = running.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        status[k] = {KILLED: "killed", NOT_REACHED: "not reached", RAISED: "raised"}.get(
            code, f"exit {code}")
    return status


def _killed_save(k: int, workdir: Path, base: Path, name: str, save, model, kw) -> int:
    root = workdir / f"kill-{k}"
    shutil.copytree(base, root, symlinks=True)
    log = workdir / f"kill-{k}.log"
    tracer = Tracer(root, kill_at=k).install()
    try:
        save(model, root / name, **kw)
    except BaseException:  # noqa: BLE001 - the child's own story, for the parent's message
        tracer.uninstall()
        log.write_text(traceback.format_exc())
        return RAISED
    return NOT_REACHED
