"""Run a pickle on a machine where every global is a stub: the globals it really resolves, and the
shape of what it builds, with none of its code run.

The opcode scan (:mod:`.pickle_scan`) models the stack; this runs the real unpickler (the same
machine ``pickle.load`` is), so memo, POP and MARK tricks resolve as they would on load. Each
global becomes a :class:`Stub` class: calling it (``REDUCE``, ``NEWOBJ``, ``INST``) records the
arguments, nothing else. Persistent ids (torch's storages) become :class:`Persistent` records.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Iterator

__all__ = ["Stub", "Persistent", "run", "walk"]


class Stub:
    """An object a stubbed global built: ``global_name`` and the arguments it was called with."""

    global_name = "<stub>"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args = args
        self.state = None
        self.items = []
        return self

    def __init__(self, *args, **kwargs):  # NEWOBJ then INST call both: accept anything
        pass

    def __setstate__(self, state):
        self.state = state

    def append(self, item):
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)

    def __setitem__(self, key, value):
        self.items.append((key, value))


class Persistent:
    """A persistent id (``BINPERSID``): torch's ``('storage', type, key, location, numel)``."""

    def __init__(self, pid):
        self.pid = pid


class _Machine(pickle.Unpickler):
    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.found: list[tuple[str, str]] = []
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> type:
        full = f"{module}.{name}"
        self.found.append((module, name))
        if full not in self._classes:
            self._classes[full] = type("Stub", (Stub,), {"global_name": full})
        return self._classes[full]

    def persistent_load(self, pid):
        return Persistent(pid)


def run(data: bytes) -> tuple[Any, list[tuple[str, str]]]:
    """``(object built of stubs, globals (module, name) resolved in order)``. Raises ``ValueError`` when the
    stream does not unpickle (the real loader would fail too), with the globals found so far
    in ``err.args[1]``.

    >>> import pickle, os
    >>> run(pickle.dumps(os.path.join, protocol=0))[1]
    [('posixpath', 'join')]
    """
    machine = _Machine(data)
    try:
        return machine.load(), machine.found
    except Exception as e:  # any failure of a damaged or hostile stream, RecursionError included
        raise ValueError(f"{type(e).__name__}: {str(e)[:200]}", machine.found) from None


def walk(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every node of a stub-built object, once, as ``(dotted path, node)``: dict values by key,
    list items by index, a stub's set items, arguments and state (iterative: any depth)."""
    seen: set[int] = set()
    todo: list[tuple[str, Any]] = [("", tree)]
    while todo:
        where, obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield where, obj
        if isinstance(obj, dict):
            todo.extend((_join(where, k), v) for k, v in obj.items())
        elif isinstance(obj, (list, tuple)):
            todo.extend((_join(where, i), v) for i, v in enumerate(obj))
        elif isinstance(obj, Stub):
            for item in obj.items:
                if isinstance(item, tuple) and len(item) == 2:
                    todo.append((_join(where, item[0]), item[1]))
            todo.extend((where, a) for a in obj.args)
            if obj.state is not None:
                todo.append((where, obj.state))


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)
