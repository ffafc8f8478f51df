"""Files pytest-ckpt wrote itself, in this run's private directory, read back: the job a child
process or a rank starts from, the project's config pickled for it, and what it sends back (the
fresh process's trace, a rank's result).

Every other read of a file goes through the safe readers: nothing a checkpoint holds runs. The
unpickling here is the one exception, and this module its only home, because

* these files were written moments ago by this run, in a directory only this run writes (a test's
  ``tmp_path``, a private ``mkdtemp``), never at a path a user or a project's save gave;
* a job names the functions the other process imports and calls, and a config is the project's own
  object: whoever could write them could run code already, so an allowlist would protect nothing,
  and only a full unpickle rebuilds the project's objects.

What holds plain data is read safely anyway: :func:`read_torch` reads the fresh process's trace
(tensors, numbers, strings, enums, numpy states) through the safe readers, weights only.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Iterable, Iterator

__all__ = ["unpickled", "pickles", "read_torch"]


def unpickled(blob: bytes | None) -> Any:
    """The object this run pickled into ``blob`` (a job, the project's config sent to another
    process, a rank's result), unpickled in full; ``None`` for none.

    >>> unpickled(pickle.dumps({"n_layer": 2})), unpickled(None)
    ({'n_layer': 2}, None)
    """
    return None if blob is None else pickle.loads(blob)


def pickles(path: str | os.PathLike) -> Iterator[Any]:
    """The objects this run pickled one after another into the file ``path``, each unpickled when
    asked for: the first may set up what the next needs to import (a job's ``sys.path``).

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "job.pkl")
    >>> with open(path, "wb") as f:
    ...     pickle.dump(["/src"], f); pickle.dump({"steps": 4}, f)
    >>> list(pickles(path))
    [['/src'], {'steps': 4}]
    """
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def read_torch(path: str | os.PathLike, *, allow: Iterable[Any] = ()) -> Any:
    """What a torch file this run wrote holds (plain data and tensors), read by the safe readers,
    weights only: besides what ``torch.load(weights_only=True)`` reads, the data classes it pickled
    (:mod:`.data_classes`: enums, numpy states), frozensets, and ``allow`` (pytest-ckpt's own
    classes that hold data); a global that runs code is ``unsafe``, as in any checkpoint.

    >>> import tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "trace.pt")
    >>> torch.save({"losses": [0.5], "trained": frozenset({"model"})}, path)
    >>> read_torch(path)
    {'losses': [0.5], 'trained': frozenset({'model'})}
    """
    from . import read
    from .data_classes import allowing, with_data_classes

    with allowing([frozenset, *allow]):  # a frozenset holds data; torch's allowlist lacks it
        return with_data_classes(read, path, meta=False).tree
