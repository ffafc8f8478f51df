"""Child processes for checks that must not share this interpreter: functions passed by
importable name, children in their own process group, killed with everything they started.

The resume check's fresh process and the plugin's rank launcher both use these.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["NotImportable", "importable", "import_object", "child_env", "kill", "tail"]


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


def kill(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group (it was started with ``start_new_session=True``) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def tail(log: Path, label: str, limit: int = 3000) -> str:
    """The last ``limit`` characters a child wrote to ``log``, headed by ``label``."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return f"--- {label} (last {limit} chars) ---\n{text[-limit:]}"
