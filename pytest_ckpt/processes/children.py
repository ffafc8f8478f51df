"""Child processes for checks that must not share this interpreter: functions passed by
importable name, children in their own process group, killed with everything they started, and
dead as soon as their parent is (:func:`spawn` in the parent, :func:`die_with_parent` in the child).

The resume check's fresh process and the rank workers both use these.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..report import progress

__all__ = ["NotImportable", "importable", "pickled", "unpickled", "import_object", "child_env", "spawn", "wait", "kill", "tail",
           "die_with_parent", "parent_death_signal"]

#: the child's end of the pipe its parent holds open while it lives, and the parent's pid
ENV_LIFELINE = "PYTEST_CKPT_LIFELINE"
ENV_PARENT = "PYTEST_CKPT_PARENT"
#: seconds between two looks at the parent, where the pipe cannot say it
PARENT_POLL_S = 0.2


class NotImportable(ValueError):
    """A function another process cannot import by name; the message says why and what to do."""


def importable(obj: Any, what: str) -> tuple[str, str]:
    """``(module, qualname)`` another process can import ``obj`` by, else :class:`NotImportable`.

    >>> importable(os.path.join, "save")
    ('posixpath', 'join')
    >>> importable(lambda: 0, "factory")
    Traceback (most recent call last):
    pytest_ckpt.processes.children.NotImportable: the factory <lambda> is a lambda or a closure, which another process cannot import; make it a module-level function
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<lambda>" in qualname or "<locals>" in qualname:
        raise NotImportable(f"the {what} {qualname or repr(obj)} is a lambda or a closure, which another "
                            "process cannot import; make it a module-level function")
    if module == "__main__":
        raise NotImportable(f"the {what} {qualname} lives in __main__, which another process cannot import")
    try:
        found = import_object(module, qualname)
    except (ImportError, AttributeError) as exc:
        raise NotImportable(f"the {what} {module}.{qualname} is not importable ({exc})") from None
    if found is not obj:
        raise NotImportable(f"the {what} {module}.{qualname} does not import back as itself")
    return module, qualname


class NotPicklable(ValueError):
    """An object another process cannot receive; the message says which and why."""


def pickled(obj: Any, what: str) -> bytes:
    """``obj`` pickled for another process, else :class:`NotPicklable`.

    >>> len(pickled({"n_layer": 2}, "config")) > 0
    True
    >>> import threading
    >>> pickled(threading.Lock(), "config")
    Traceback (most recent call last):
    pytest_ckpt.processes.children.NotPicklable: the config lock cannot be pickled for another process (TypeError: cannot pickle '_thread.lock' object)
    """
    import pickle

    try:
        return pickle.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - pickling fails in many ways, all meaning the same here
        raise NotPicklable(f"the {what} {type(obj).__name__} cannot be pickled for another process "
                           f"({type(exc).__name__}: {exc})") from None


def unpickled(blob: bytes | None) -> Any:
    """In the other process: the object :func:`pickled` sent (a project's config), ``None`` for none
    (:func:`pytest_ckpt.formats.own.unpickled`: what this run wrote itself).

    >>> unpickled(pickled({"n_layer": 2}, "config")), unpickled(None)
    ({'n_layer': 2}, None)
    """
    from ..formats import own  # not at import: formats imports torch

    return own.unpickled(blob)


def import_object(module: str, qualname: str) -> Any:
    """The object ``module.qualname``, imported."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def child_env() -> dict[str, str]:
    """This environment, with this package importable and one intra-op thread by default."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1].parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def spawn(argv: list[str], log: Path, **popen: Any) -> subprocess.Popen:
    """``argv`` started in a session of its own (so :func:`kill` takes its children too), its output
    in ``log``, holding the read end of a pipe whose write end only this process holds: the child's
    :func:`die_with_parent` sees it close when this process dies, however it dies (``SIGKILL``)."""
    read, write = os.pipe()
    env = dict(popen.pop("env", None) or child_env())
    env.update({ENV_LIFELINE: str(read), ENV_PARENT: str(os.getpid())})
    popen.setdefault("stdin", subprocess.DEVNULL)
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, pass_fds=(read,),
                                    start_new_session=True, **popen)
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    proc.lifeline = write  # type: ignore[attr-defined]  # closed by kill(); at the latest, by our exit
    return proc


def wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc``; whether it ended."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        progress.tick()  # a person waiting sees what for
        time.sleep(0.02)
    return True


def kill(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group (it was started with ``start_new_session=True``) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    lifeline = getattr(proc, "lifeline", None)
    if lifeline is not None:
        proc.lifeline = None  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            os.close(lifeline)


def parent_death_signal() -> bool:
    """Linux: have the kernel ``SIGKILL`` this process when its parent dies (``PR_SET_PDEATHSIG``); whether
    it could. It acts even while this process is stuck where no thread of it can run."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """In a child: exit as soon as its parent is gone, however the parent died. On Linux the kernel
    kills it (:func:`parent_death_signal`); everywhere, a thread watching the pipe :func:`spawn` gave
    it (or, without one, the parent's pid) kills its session, itself and what it started, when it
    sees the parent go first."""
    parent = int(os.environ.pop(ENV_PARENT, "0") or 0) or os.getppid()
    lifeline = os.environ.pop(ENV_LIFELINE, "")
    parent_death_signal()
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)

    def gone() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(0, signal.SIGKILL)  # its own session: this process and its children
        os._exit(1)

    def watch() -> None:
        fd = int(lifeline) if lifeline.isdigit() else None
        while True:
            if fd is not None:
                ready, _, _ = select.select([fd], [], [], PARENT_POLL_S)
                if ready and not os.read(fd, 1):  # end of file: the parent's end is closed
                    gone()
            else:
                time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                gone()

    threading.Thread(target=watch, name="pytest-ckpt-parent-watch", daemon=True).start()


def tail(log: Path, label: str, limit: int = 3000) -> str:
    """The last ``limit`` characters a child wrote to ``log``, headed by ``label``."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return f"--- {label} (last {limit} chars) ---\n{text[-limit:]}"
