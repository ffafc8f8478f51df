"""Everything a checkpoint file holds, not only its tensors: to explain where a training run's state
is saved (an optimizer, a counter, an RNG state), never to load weights.

Read by the same safe readers as ``verify``, with the data classes the file pickled allowed
(:mod:`.data_classes`: numpy RNG states, enums, dataclasses). A torch file that asks for a global
that runs code is not unpickled at all: its pickle runs on stubs (:mod:`.pickle_stub`), so its
dicts, lists and plain values are there to be searched while its tensors and objects stay opaque
records, and :attr:`Held.partial` says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from . import pickle_stub, read
from .data_classes import with_data_classes

__all__ = ["Held", "read_objects"]

@dataclass
class Held:
    """What one file holds. ``partial``: why only its containers and plain values are real (the
    file asks for a global that runs code; nothing of it was run), else ``None``."""

    tree: Any
    partial: str | None = None


def read_objects(path: str | os.PathLike, *, meta: bool = False) -> Held:
    """The object a checkpoint file holds (``meta``: tensors without data), read safely.

    Raises ``CheckpointError`` where the file cannot be read at all (damaged, not a checkpoint).

    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "objects.pt")
    >>> class Payload:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo ran",))
    >>> torch.save({"step": 3, "extra": Payload()}, path)
    >>> held = read_objects(path)
    >>> held.tree["step"], held.partial.split(",")[0]
    (3, 'data.pkl asks for os.system')
    """
    path = Path(path)
    try:
        return Held(with_data_classes(read, path, meta=meta).tree)
    except CheckpointError as e:
        if e.kind not in ("unsafe", "needs-safe-globals"):
            raise
        data = _data_pkl(path)
        if data is None:
            raise
        refusal = e
    try:
        built, _ = pickle_stub.run(data)
    except ValueError:  # a stream the real loader cannot read either
        raise refusal from None
    return Held(built, partial=refusal.cause)


def _data_pkl(path: Path) -> bytes | None:
    """The pickle of a torch zip file (which the safe reader has just bounded and scanned), read
    by torch's own zip reader; ``None`` for any other file, or one that reader cannot open."""
    import torch

    from .registry import detect

    fmt, target = detect(path)
    if fmt.name != "torch":
        return None
    try:
        return bytes(torch._C.PyTorchFileReader(str(target)).get_record("data.pkl"))
    except Exception:  # noqa: BLE001 - damaged: the refusal already raised says enough
        return None
