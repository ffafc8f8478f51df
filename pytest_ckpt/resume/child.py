"""The resumed half in a fresh Python process: nothing held in memory can stand in for the checkpoint.

The parent pickles a job (its ``sys.path``, the functions by module and qualified name, the config,
torch's thread and precision settings) and runs ``python -m pytest_ckpt.resume.child JOB``. The child
starts the run under the poisoned seed, loads, trains the remaining steps and writes its
:class:`~pytest_ckpt.resume.runner.Trace` next to the job, as plain data the parent reads weights only
(:func:`pytest_ckpt.formats.own.read_torch`); an error it hits is written there too (JSON) and
raised again in the parent. The child runs in its own process group, is killed on timeout, and never
outlives the check, nor the parent (:func:`pytest_ckpt.processes.children.die_with_parent`).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import CheckpointError, ResumeError, ResumeUnavailable
from ..processes import children
from ..processes.children import NotPicklable, pickled

#: the errors a child sends back to be raised again in the parent, as themselves
_RERAISED = {"ResumeError": ResumeError, "TypeError": TypeError, "ValueError": ValueError}


@dataclass
class FreshProcess:
    """How the resumed half runs in a new process: the functions by name, the config pickled."""

    functions: dict[str, tuple[str, str] | None]
    config_blob: bytes | None
    timeout: float
    #: instead of ``functions``: a function imported by name that, called with the unpickled argument,
    #: returns the four functions by role (a trainer check's steps, built around the project's own code)
    rebuild: tuple[tuple[str, str], bytes] | None = None

    @classmethod
    def prepare(cls, fns: Any, timeout: float) -> "FreshProcess":
        """Check now that a new process can rebuild the functions and the config, else ResumeUnavailable."""
        names = {role: importable(getattr(fns, role), role) for role in ("start", "step", "save", "load")}
        names["wrap"] = importable(fns.wrap, "wrap") if fns.wrap is not None else None
        try:
            blob = None if fns.config is None else pickled(fns.config, "config")
        except NotPicklable as exc:
            raise ResumeUnavailable(f"cannot run in a fresh process: {exc}") from None
        return cls(names, blob, timeout)

    @classmethod
    def rebuilt(cls, builder: tuple[str, str], argument: bytes, timeout: float) -> "FreshProcess":
        """The resumed half's functions made in the new process by ``builder(argument)`` (``argument``:
        pickled by the caller, who says what cannot be)."""
        return cls({}, None, timeout, rebuild=(builder, argument))

    def run(self, path: Path, at: int, steps: int, streams: tuple[str, ...], workdir: Path, *, prints: str = "none"):
        """The resumed half's :class:`Trace`, computed by a new process."""
        import torch

        job_dir = Path(workdir) / f"fresh-process-after-step-{at}" / prints
        job_dir.mkdir(parents=True, exist_ok=True)
        job = {"sys_path": list(sys.path), "functions": self.functions, "config": self.config_blob,
               "rebuild": self.rebuild,
               "path": str(path), "at": at, "steps": steps, "streams": streams, "prints": prints,
               "settings": {"threads": torch.get_num_threads(),
                            "deterministic": torch.are_deterministic_algorithms_enabled(),
                            "matmul": torch.get_float32_matmul_precision(),
                            "dtype": str(torch.get_default_dtype()).replace("torch.", "")}}
        job_path = job_dir / "job.pkl"
        job_path.write_bytes(pickle.dumps(job))
        log = job_dir / "child.log"
        _spawn_and_wait(job_path, log, self.timeout)
        error = job_dir / "error.json"
        if error.exists():
            kind, message = json.loads(error.read_text())
            raise _RERAISED.get(kind, ResumeError)(f"{message} (in the fresh process; its output: {log})")
        result = job_dir / "trace.pt"
        if not result.exists():
            raise ResumeError(f"the fresh process for the resume after step {at} ended without a result\n"
                              + children.tail(log, "its output"))
        from ..formats import own
        from .capture import Unreadable
        from .runner import Trace

        # plain data: read by the safe readers, weights only (its one class of ours: a reason, a str)
        return Trace(**own.read_torch(result, allow=[Unreadable]))


def importable(fn: Callable, role: str) -> tuple[str, str]:
    """``(module, qualname)`` a new process can import ``fn`` by, else ResumeUnavailable with the reason."""
    try:
        return children.importable(fn, role)
    except children.NotImportable as exc:
        raise ResumeUnavailable(f"cannot run in a fresh process: {exc}") from None


def _spawn_and_wait(job_path: Path, log: Path, timeout: float) -> None:
    # its own session, killed with its children; dead with this process, however it dies
    proc = children.spawn([sys.executable, "-m", "pytest_ckpt.resume.child", str(job_path)], log)
    try:
        if not children.wait(proc, timeout):
            raise ResumeError(f"the fresh process did not finish within {timeout:g}s (timeout=)\n" + children.tail(log, "its output"))
    finally:
        children.kill(proc)


def main(job_path: str) -> int:
    """The child: rebuild the functions, run the resumed half, write the trace (or the error)."""
    children.die_with_parent()
    job_dir = Path(job_path).parent
    from ..formats import own

    job = own.unpickled(Path(job_path).read_bytes())
    sys.path[:0] = [p for p in job["sys_path"] if p not in sys.path]
    try:
        import torch

        from .runner import Functions, resumed_half

        settings = job["settings"]
        torch.set_num_threads(settings["threads"])
        torch.use_deterministic_algorithms(settings["deterministic"])
        torch.set_float32_matmul_precision(settings["matmul"])
        torch.set_default_dtype(getattr(torch, settings["dtype"]))
        if job["rebuild"] is not None:
            builder, argument = job["rebuild"]
            fns = {"wrap": None, **children.import_object(*builder)(children.unpickled(argument))}
        else:
            fns = {role: (children.import_object(*name) if name else None) for role, name in job["functions"].items()}
        config = children.unpickled(job["config"])
        functions = Functions(fns["start"], fns["step"], fns["save"], fns["load"], config, fns["wrap"])
        trace = resumed_half(functions, Path(job["path"]), job["at"], job["steps"], tuple(job["streams"]),
                             prints=job["prints"])
        torch.save(vars(trace), job_dir / "trace.tmp")  # its fields: plain data, read back weights only
        os.replace(job_dir / "trace.tmp", job_dir / "trace.pt")
    except (ResumeError, TypeError, ValueError, CheckpointError) as exc:
        traceback.print_exc()
        kind = type(exc).__name__ if type(exc).__name__ in _RERAISED else "ResumeError"
        (job_dir / "error.json").write_text(json.dumps([kind, str(exc)]))
        return 1
    except BaseException as exc:  # noqa: BLE001 - anything else: say what, the parent shows the output
        traceback.print_exc()
        (job_dir / "error.json").write_text(json.dumps(["ResumeError", f"{type(exc).__name__}: {exc}"]))
        return 1
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: nothing of the user's may linger
