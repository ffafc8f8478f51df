"""A rank worker: one long-lived process that runs rank jobs, one after another, for :mod:`.pool`.

Started as ``python -m pytest_ckpt.processes.rank_worker READY_PATH``. It imports torch once,
touches ``READY_PATH``, then reads one job a line (JSON) from stdin: ``{"target": "module:function",
"job": JOB_PATH, "rank": R, "log": LOG, "result": RESULT, "cwd": ..., "env": {...}}``. It runs
``function(JOB_PATH, R)`` with its output in ``LOG``, in ``cwd`` under ``env``, and writes the exit
code to ``RESULT`` (atomically). Between jobs it forgets what the last one imported from outside
the interpreter's own prefixes (a project's modules, a test's), so two projects with a module of the
same name never see each other's.

A job that failed (other than "cannot run here"), or left a process group open, retires the worker (it exits with the job's code):
the pool starts a fresh one. It exits on its own when stdin closes or its parent dies
(:func:`~pytest_ckpt.processes.children.die_with_parent`), killing its process group with it: a worker
never outlives the pytest process.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import sysconfig
import traceback

#: a job's "cannot run here" (processes.EXIT_UNAVAILABLE; not imported: this module starts light)
EXIT_UNAVAILABLE = 3


def _kept_roots() -> tuple[str, ...]:
    """Where modules that stay loaded between jobs live: the interpreter's and this package's."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    paths.update(v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib"))
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths.add(package)
    return tuple(os.path.join(os.path.realpath(p), "") for p in paths if p)


def forget_job_modules(baseline: set[str], kept: tuple[str, ...]) -> None:
    """Drop the modules imported since ``baseline`` that live outside ``kept`` (the project's)."""
    for name in [n for n in sys.modules if n not in baseline]:
        path = getattr(sys.modules[name], "__file__", None)
        if path and not os.path.realpath(path).startswith(kept):
            del sys.modules[name]
    importlib.invalidate_caches()


def run_job(request: dict) -> int:
    """``function(job, rank)`` of the request, its output in the request's log."""
    module, _, function = request["target"].partition(":")
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        return int(getattr(importlib.import_module(module), function)(request["job"], request["rank"]))
    except BaseException:  # noqa: BLE001 - the job's failure is reported by its code and log
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def write_result(path: str, code: int) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(str(code))
    os.replace(path + ".tmp", path)


def main(ready_path: str) -> None:
    from .children import die_with_parent

    die_with_parent()
    import torch  # noqa: F401 - the seconds this worker exists to pay once
    import torch.distributed as dist
    import torch.distributed.checkpoint  # noqa: F401
    from torch.distributed.fsdp import fully_shard  # noqa: F401

    from .. import api  # noqa: F401

    baseline, path, kept = set(sys.modules), list(sys.path), _kept_roots()
    with open(ready_path, "w"):
        pass
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        code = run_job(request)
        retire = code not in (0, EXIT_UNAVAILABLE) or dist.is_initialized()
        write_result(request["result"], code)
        if retire:
            break
        sys.path[:] = path
        forget_job_modules(baseline, kept)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: gloo's threads can abort it


if __name__ == "__main__":
    main(sys.argv[1])
