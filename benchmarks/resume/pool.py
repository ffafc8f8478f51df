"""Long-lived worker processes, so that every resume checker is timed the same way: in-process.

A ``Pool(argv, env, cwd)`` starts a worker command when first asked (it reads a JSON request a
line on stdin and answers a JSON line on stdout, see ``serve``) and reuses it for every request.
A request that runs past its timeout kills that worker's whole process group, and the next
request starts a fresh one. The worker
times only the call it was asked to make (``serve``): its interpreter start and imports are paid
once, before the first request, as they are for pytest-ckpt in the benchmark's own process.

    with Pool([python, "peers.py", "_serve", "pytest-torch"], env, cwd) as pool:
        reply = pool.ask({"family": "mlp", "bug": None, "at": 3, "steps": 14}, timeout=180)
"""
from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable


class WorkerGone(RuntimeError):
    """The worker died or ran past its timeout before it answered."""


class _Worker:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, start_new_session=True)
        self.buffer = b""

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerGone(f"worker exited before the request ({self.tail()})") from None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise WorkerGone(f"no answer within {timeout:g} s (killed)")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.proc.wait()
                    raise WorkerGone(f"worker exited {self.proc.returncode} ({self.tail()})")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def tail(self, chars: int = 2000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-chars:].strip()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the worker's loop ends at EOF
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()


class Pool:
    """One long-lived worker of a command, started when first needed, started again after it died."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.argv, self.env, self.cwd = argv, env, cwd
        self.worker: _Worker | None = None

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The worker's answer, or raises WorkerGone (that worker is then discarded)."""
        if self.worker is None:
            self.worker = _Worker(self.argv, self.env, self.cwd)
        try:
            return self.worker.ask(request, timeout)
        except WorkerGone:
            self.worker.kill()
            self.worker.log.close()
            self.worker = None
            raise

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cpu_seconds() -> float:
    """This process's CPU time and that of the children it reaped (a tool's own subprocesses)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def serve(call: Callable[[dict[str, Any]], Any]) -> None:
    """The worker's loop: answer each request line with {payload, seconds, cpu_seconds} or {error}.

    Only ``call(request)`` is timed. Whatever the tool prints goes to stderr: stdout carries the
    answers only."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        request = json.loads(line)
        began, cpu = time.perf_counter(), _cpu_seconds()
        try:
            answer: dict[str, Any] = {"payload": call(request)}
        except Exception as exc:  # noqa: BLE001 - a crash of the tool is a result, never a pass
            answer = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        answer |= {"seconds": time.perf_counter() - began, "cpu_seconds": _cpu_seconds() - cpu}
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()
