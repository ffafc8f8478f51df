"""Reading what a project saved beside its weights (RNG states, optimizer state, a config) with the
data classes it pickled allowed for that one read, and nothing else.

A training checkpoint holds ``np.random.get_state()`` (numpy arrays), enums, dataclasses: globals
that run no code when unpickled (:func:`.safe_globals.classify` says which) but that weights-only
loading refuses until allowed. Here they are allowed for one call, resolved from the modules this
process has already imported (nothing is imported); a global that runs code, or one that cannot be
checked here, stays refused, and torch's weights-only unpickler stays the only one that runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

from ..errors import CheckpointError
from .safe_globals import DATA, _resolve, classify

__all__ = ["allowing", "with_data_classes", "data_objects"]

T = TypeVar("T")

#: the refusals a data class alone can cause (``unsafe`` where the reader gave no advice)
_REFUSALS = ("needs-safe-globals", "unsafe")


def data_objects(names: Iterable[str]) -> list[Any] | None:
    """The objects ``names`` stand for when every one is a data class this process can resolve;
    else ``None`` (one of them runs code, or its module is not imported: it stays refused).

    >>> import argparse
    >>> data_objects(["argparse.Namespace"]) == [argparse.Namespace]
    True
    >>> data_objects(["argparse.Namespace", "os.system"]) is None
    True
    """
    objects = []
    for name in names:
        obj = _resolve(name) if classify(name) == DATA else None
        if obj is None:
            return None
        objects.append(obj)
    return objects + _dtype_classes(objects)


def _dtype_classes(objects: list[Any]) -> list[type]:
    # a pickled numpy dtype is rebuilt as its own class (numpy.dtypes.UInt32DType), which the
    # pickle never names: allowing numpy.dtype allows numpy's dtype classes with it
    import sys

    np = sys.modules.get("numpy")
    if np is None or not any(o is np.dtype for o in objects):
        return []
    return list({type(np.dtype(t)) for t in set(np.sctypeDict.values())})


@contextmanager
def allowing(objects: list[Any]) -> Iterator[None]:
    """``torch.serialization.safe_globals(objects)`` for the block (nothing when empty)."""
    if not objects:
        yield
        return
    import torch

    with torch.serialization.safe_globals(objects):
        yield


def with_data_classes(fn: Callable[..., T], *args, **kw) -> T:
    """``fn(*args, **kw)`` (a safe reader or verifier of a file); where it refuses the file for data
    classes only, once more with exactly those allowed. Any other refusal is raised as it is.

    >>> import argparse, os, tempfile, torch, pytest_ckpt.formats as formats
    >>> path = os.path.join(tempfile.mkdtemp(), "with-args.pt")
    >>> torch.save({"w": torch.ones(1), "args": argparse.Namespace(lr=0.1)}, path)
    >>> sorted(with_data_classes(formats.read, path, meta=True).tree)
    ['args', 'w']
    """
    try:
        return fn(*args, **kw)
    except CheckpointError as e:
        objects = data_objects(e.globals) if e.kind in _REFUSALS and e.globals else None
        if objects is None:
            raise
    with allowing(objects):
        return fn(*args, **kw)
