"""The file boundaries of a save, traced in the process that runs it, and a kill at one of them.

A boundary is a point where a kill leaves the disk in a different state: before each file
or directory the save creates (Python's ``open``/``os.open`` in a write mode, ``os.mkdir``,
and the writers torch and safetensors run in C++ and Rust, at their Python entry points),
before each rename, replace and removal, and "torn": a file's write has completed and the
file is cut to a prefix (the bytes that never reached the disk) before the kill.

Installed only in a child process that exists to be killed (:mod:`.crash`): it patches
``builtins.open``, ``io.open``, ``os.*``, ``torch.serialization._open_zipfile_writer`` and
``safetensors.torch.serialize_file`` for the rest of that process's life.

>>> Boundary("before", "os.replace", ("/r/model.pt.tmp", "/r/model.pt")).describe("/r")
'killed before os.replace(.../model.pt.tmp, .../model.pt)'
>>> Boundary("torn", "safetensors", ("/r/m/model-00002-of-00003.safetensors",)).describe("/r")
'torn m/model-00002-of-00003.safetensors at 50%'
"""

from __future__ import annotations

import builtins
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

#: a child killed at its boundary exits with this status (os._exit: no cleanup, no flush)
KILLED = 75
#: the fraction of a torn file that is kept
TORN_FRACTION = 0.5
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@dataclass(frozen=True)
class Boundary:
    """One point of a save: ``kind`` "before" (the kill comes before ``op``) or "torn"."""

    kind: str
    #: what the save called: "open", "os.open", "torch.save", "safetensors", "os.replace", ...
    op: str
    paths: tuple[str, ...]

    def describe(self, root: str | os.PathLike) -> str:
        if self.kind == "torn":
            return f"torn {_short(self.paths[0], root, dots=False)} at {TORN_FRACTION:.0%}"
        args = ", ".join(_short(p, root) for p in self.paths)
        return f"killed before {self.op}({args})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Boundary":
        return cls(d["kind"], d["op"], tuple(d["paths"]))


def _short(path: str, root: str | os.PathLike, *, dots: bool = True) -> str:
    """``path`` relative to ``root`` (``.../name`` when ``dots``), else as it is."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    if rel.startswith(".."):
        return path
    return f".../{rel}" if dots else rel


def _writes(mode: str) -> bool:
    return any(c in mode for c in "wax+")


def _name(file: Any) -> str | None:
    """The path a file argument names, absolute; ``None`` for a buffer or a descriptor."""
    if isinstance(file, (str, bytes, os.PathLike)):
        name = os.fsdecode(os.fspath(file))
        return os.path.abspath(name)
    return None


class Tracer:
    """Counts the boundaries of the calls made while it is installed; kills at ``kill_at``.

    ``root``: the directory the save was given; a write outside it is recorded in ``outside``.
    """

    def __init__(self, root: str | os.PathLike, kill_at: int | None = None) -> None:
        self.root = os.path.abspath(root)
        self.kill_at = kill_at
        self.events: list[Boundary] = []
        self.outside: list[str] = []
        self.active = False
        self._undo: list[Callable[[], None]] = []

    # -- the boundary itself ---------------------------------------------------------------

    def hit(self, kind: str, op: str, *paths: str) -> None:
        if not self.active:
            return
        for p in paths:
            if not p.startswith("/dev/") and os.path.commonpath([self.root, p]) != self.root:
                self.outside.append(f"{op}({', '.join(paths)})")
                break
        index = len(self.events)
        self.events.append(Boundary(kind, op, tuple(paths)))
        if index == self.kill_at:
            if kind == "torn":
                _truncate(paths[0])
            os._exit(KILLED)

    def before(self, op: str, *paths: str) -> None:
        self.hit("before", op, *paths)

    def torn(self, path: str) -> None:
        if os.path.isfile(path):
            self.hit("torn", "write", path)

    # -- installing ------------------------------------------------------------------------

    def install(self) -> "Tracer":
        """Patch the file calls (torch and safetensors too, when imported) for this process."""
        self._patch(builtins, "open", self._traced_open(builtins.open))
        self._patch(io, "open", self._traced_open(io.open))
        self._patch(os, "open", self._traced_os_open(os.open))
        for op in ("replace", "rename", "remove", "unlink", "rmdir", "mkdir"):
            self._patch(os, op, self._traced_path_op(f"os.{op}", getattr(os, op), two=op in ("replace", "rename")))
        self._patch_writers()
        self.active = True
        return self

    def uninstall(self) -> None:
        self.active = False
        while self._undo:
            self._undo.pop()()

    def _patch(self, owner: Any, attr: str, new: Any) -> None:
        old = getattr(owner, attr)
        setattr(owner, attr, new)
        self._undo.append(lambda: setattr(owner, attr, old))

    def _traced_open(self, real: Callable) -> Callable:
        tracer = self

        def open(file, mode="r", *args, **kwargs):  # noqa: A001 - it stands in for open
            path = _name(file) if _writes(mode) else None
            if path is not None:
                tracer.before("open", path)
            f = real(file, mode, *args, **kwargs)
            if path is not None:
                _on_close(f, lambda: tracer.torn(path))
            return f

        return open

    def _traced_os_open(self, real: Callable) -> Callable:
        tracer = self

        def os_open(path, flags, *args, **kwargs):
            name = _name(path) if kwargs.get("dir_fd") is None else None
            if name is not None and flags & _WRITE_FLAGS:
                tracer.before("os.open", name)
            return real(path, flags, *args, **kwargs)

        return os_open

    def _traced_path_op(self, op: str, real: Callable, *, two: bool) -> Callable:
        tracer = self

        def path_op(*args, **kwargs):
            if kwargs.get("dir_fd") is None and kwargs.get("src_dir_fd") is None:
                names = [_name(a) for a in args[:2 if two else 1]]
                # makedirs(exist_ok=True) tries a directory that is there: nothing changes
                noop = op == "os.mkdir" and names[0] is not None and os.path.isdir(names[0])
                if all(n is not None for n in names) and not noop:
                    tracer.before(op, *names)
            else:  # shutil.rmtree's descriptor-relative calls: the name is all there is
                tracer.before(op, os.path.join(tracer.root, "?", os.fsdecode(args[0])))
            return real(*args, **kwargs)

        return path_op

    def _patch_writers(self) -> None:
        """torch's zip writer (C++) and safetensors' (Rust), at the Python calls that start them."""
        import sys

        torch_serialization = sys.modules.get("torch.serialization")
        if torch_serialization is not None:
            self._patch(torch_serialization, "_open_zipfile_writer",
                        self._traced_zip_writer(torch_serialization._open_zipfile_writer))
        try:
            import safetensors.torch as st
        except ImportError:
            st = None
        if st is not None and hasattr(st, "serialize_file"):
            self._patch(st, "serialize_file", self._traced_serialize_file(st.serialize_file))

    def _traced_zip_writer(self, real: Callable) -> Callable:
        tracer = self

        def _open_zipfile_writer(name_or_buffer):
            path = _name(name_or_buffer)
            if path is None:  # a buffer: its own open() was traced
                return real(name_or_buffer)
            tracer.before("torch.save", path)
            return _AfterExit(real(name_or_buffer), lambda: tracer.torn(path))

        return _open_zipfile_writer

    def _traced_serialize_file(self, real: Callable) -> Callable:
        tracer = self

        def serialize_file(tensors, filename, *args, **kwargs):
            path = _name(filename)
            if path is not None:
                tracer.before("safetensors.torch.save_file", path)
            out = real(tensors, filename, *args, **kwargs)
            if path is not None:
                tracer.torn(path)
            return out

        return serialize_file


class _AfterExit:
    """A context manager that runs ``after`` once the wrapped one has exited without an error."""

    def __init__(self, inner: Any, after: Callable[[], None]) -> None:
        self.inner, self.after = inner, after

    def __enter__(self):
        return self.inner.__enter__()

    def __exit__(self, *exc):
        out = self.inner.__exit__(*exc)
        if exc[0] is None:
            self.after()
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _on_close(f: Any, after: Callable[[], None]) -> None:
    """Run ``after`` once ``f`` is closed by ``close()`` or its ``with`` block."""
    real_close = f.close

    def close():
        was_open = not f.closed
        real_close()
        if was_open:
            after()

    try:
        f.close = close
    except (AttributeError, TypeError):  # a file type without instance attributes: no torn point
        pass


def _truncate(path: str) -> None:
    size = os.path.getsize(path)
    os.truncate(path, int(size * TORN_FRACTION))


def read_events(path: Path) -> list[Boundary]:
    import json

    return [Boundary.from_dict(d) for d in json.loads(Path(path).read_text())]
