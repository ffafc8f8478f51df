"""Rank workers started once per pytest process and reused by every test that needs ranks.

A rank job used to pay a fresh Python and a torch import per rank per test (about 4 s); a pooled
worker (:mod:`.rank_worker`) pays them once. The pool grows to the largest world size asked for; a
job of world size ``n`` runs on its first ``n`` workers (rank ``r`` always on worker ``r``). A worker
that died, or that a failed job retired or the launcher discarded (a rank may be stuck in a
collective), is replaced by a fresh one in its slot on the next job.

No worker outlives this process: :meth:`RankPool.close` runs at exit, and each worker watches its
parent and exits (with its process group) when the parent is gone, even after a ``SIGKILL``.
``PYTEST_CKPT_RANK_POOL=0`` turns reuse off: every job then gets fresh workers, as before the pool.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import children, scratch

#: environment variable: ``0`` starts fresh rank processes for every job (no reuse)
ENV_RANK_POOL = "PYTEST_CKPT_RANK_POOL"
WORKER_MODULE = "pytest_ckpt.processes.rank_worker"


def rank_env() -> dict[str, str]:
    """The environment of a rank: :func:`children.child_env`, gloo on the loopback interface."""
    env = children.child_env()
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


@dataclass
class Worker:
    proc: subprocess.Popen
    #: touched by the worker once torch is imported
    ready: Path
    #: the worker's own output (a crash at start-up); a job's output goes to the job's log
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, request: dict) -> bool:
        """Hand the worker a job; False when it is gone."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False


class RankPool:
    """The workers of this process (``reuse=False``: the workers of one job, closed after it)."""

    def __init__(self, *, reuse: bool = True) -> None:
        self.reuse = reuse
        #: slot ``r`` runs rank ``r`` (None: to be started)
        self.workers: list[Worker | None] = []
        self._dir: Path | None = None
        self._started = 0

    def take(self, world_size: int) -> list[Worker]:
        """``world_size`` live workers, rank order; dead ones replaced, missing ones started.

        The worker in slot ``r`` always runs rank ``r``: torch keeps per-process state keyed by the
        mesh (a device mesh equal to an earlier one is the earlier one, with its rank's coordinates),
        so a process must not be rank 2 in one job and rank 0 in the next."""
        while len(self.workers) < world_size:
            self.workers.append(None)
        for rank in range(world_size):
            worker = self.workers[rank]
            if worker is None or not (worker.alive() or self._reap(worker)):
                self.workers[rank] = self._start()
        return list(self.workers[:world_size])

    def discard(self, workers: list[Worker]) -> None:
        """Kill ``workers`` (a failed job may have left them in a collective); the next job starts new ones."""
        for w in workers:
            children.kill(w.proc)
            if w in self.workers:
                self.workers[self.workers.index(w)] = None

    def close(self) -> None:
        """Kill every worker and remove the pool's files."""
        self.discard([w for w in self.workers if w is not None])
        self.workers = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w is not None and w.alive()]

    def _reap(self, worker: Worker) -> bool:
        children.kill(worker.proc)  # its process group too: whatever the job started
        return False

    def _start(self) -> Worker:
        if self._dir is None:
            self._dir = scratch.owned_dir("ranks")  # a killed run's is removed by the next one
            if self.reuse:
                atexit.register(self.close)
        self._started += 1
        ready, log = self._dir / f"worker-{self._started}.ready", self._dir / f"worker-{self._started}.log"
        # its own session, killed with its children; dead with this process, however it dies
        proc = children.spawn([sys.executable, "-m", WORKER_MODULE, str(ready)], log, env=rank_env(),
                              stdin=subprocess.PIPE, cwd=self._dir)
        return Worker(proc, ready, log)


_POOL: RankPool | None = None


def shared() -> RankPool:
    """This process's pool; a fresh one per call when ``PYTEST_CKPT_RANK_POOL=0``."""
    global _POOL
    if os.environ.get(ENV_RANK_POOL, "1").strip() == "0":
        return RankPool(reuse=False)
    if _POOL is None:
        _POOL = RankPool()
    return _POOL
