"""A torch zip's tensor records whose CRC32 is checked where their values are read: the
comparison reads every byte of them anyway, so it computes their CRC in that same pass over the
mapped pages (each byte read once) and hands it here; :meth:`RecordCrcs.finish` checks the
rest from the file and refuses the file as ``verify`` does."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Iterable

import torch

from . import zipcheck


class RecordCrcs:
    """The storage records of ``path`` whose CRC32 is not yet checked.

    ``claim(t)``: when ``t``'s bytes are, whole (contiguous, from its storage's first byte to its
    last), one record, what takes their CRC32 (once per record). ``finish()`` reads the records
    nobody claimed and raises ``corrupted`` naming the first that fails, in the archive's order,
    as :func:`.zipcheck.check_crcs` does. Whoever reads values through a reader that returned one
    must call ``finish`` before saying anything of them.
    """

    def __init__(self, path: Path, layout: zipcheck.Layout, pending: list[zipcheck.Span],
                 tensors: Iterable[torch.Tensor]):
        self.path, self.layout = path, layout
        self._pending = {span.record: span for span in pending}
        self._computed: dict[str, int] = {}
        self.claimed: set[str] = set()
        self._base = _mapping_base([span for name, span in layout.spans.items() if name.startswith("data/")], tensors)
        self._by_start = {span.start: span for span in pending}
        self.finished = False

    def claim(self, t: torch.Tensor) -> Callable[[int], None] | None:
        """What takes the CRC32 of ``t``'s bytes when they are, whole, an unclaimed record as torch
        mapped it; ``None`` otherwise (the record is then read from the file by :meth:`finish`)."""
        if self._base is None or t.device.type != "cpu" or t.storage_offset() or not t.is_contiguous():
            return None
        storage = t.untyped_storage()
        span = self._by_start.get(storage.data_ptr() - self._base)
        if span is None or storage.nbytes() != span.size or t.numel() * t.element_size() != span.size:
            return None
        if span.record in self.claimed:
            return None  # a tensor tied to one already claimed: its bytes are checked once
        self.claimed.add(span.record)
        return functools.partial(self._computed.__setitem__, span.record)

    def finish(self) -> None:
        """Check every record: those claimed by the CRC their taker was given, the rest read here."""
        if not self.finished:
            self.finished = True
            zipcheck.check_crcs(self.path, self.layout, spans=list(self._pending.values()), computed=self._computed)


def byteswapped(path: Path, layout: zipcheck.Layout) -> bool:
    """torch.load swaps the bytes of this file's storages in memory (its byte order is not this
    machine's): what it maps is then not what the CRCs cover."""
    order = zipcheck.read(path, layout, "byteorder").decode("ascii", "replace") if "byteorder" in layout else None
    if order is None:
        from torch.serialization import LoadEndianness, get_default_load_endianness

        order = "big" if get_default_load_endianness() == LoadEndianness.BIG else "little"
    return order != sys.byteorder


def _mapping_base(records: list[zipcheck.Span], tensors: Iterable[torch.Tensor]) -> int | None:
    """The address torch mapped the file's first byte at: each storage of a ``torch.load(mmap=True)``
    is the mapping's slice at its record's offset. Taken from the lowest storage and one of the
    lowest records, and kept only when every storage then lies at a record of its size (else ``None``:
    every CRC is read from the file)."""
    storages = {}
    for t in tensors:
        if t.device.type == "cpu" and not t.is_meta:
            s = t.untyped_storage()
            if s.nbytes():
                storages[s.data_ptr()] = s.nbytes()
    starts = {span.start: span.size for span in records if span.size}
    if not storages or not starts:
        return None
    lowest = min(storages)
    for start in sorted(starts)[:3]:  # the lowest record may be one no tensor uses
        base = lowest - start
        if all(starts.get(ptr - base) == n for ptr, n in storages.items()):
            return base
    return None
