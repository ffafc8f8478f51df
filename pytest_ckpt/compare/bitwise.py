"""Which bytes of two contiguous CPU tensors differ, by one pass over both: C's ``memcmp`` over
aligned chunks, and the CRC32 of a side read from a file computed of the same chunk while it is
in cache, so each byte of the file is read from memory once.

Each pair is one job, and the jobs run on the cores at once with no lock held (``memcmp`` and
the CRC let go of the GIL): a thread that another process keeps off its core delays only its
own jobs, where a parallel torch kernel waits for it once per call.
"""

from __future__ import annotations

import ctypes
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch

from ..formats.checksum import crc32

#: bytes compared per call: a chunk the CRC just read is still in the core's cache for memcmp
CHUNK_BYTES = 1 << 20


def _libc_memcmp():
    try:
        libc = ctypes.cdll.msvcrt if sys.platform == "win32" else ctypes.CDLL(None)
        fn = libc.memcmp
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    fn.restype = ctypes.c_int
    return fn


_memcmp = _libc_memcmp()


class Job(NamedTuple):
    """Two tensors to compare byte for byte; ``crc_a``/``crc_b``: also compute that side's CRC32."""

    a: torch.Tensor
    b: torch.Tensor
    crc_a: bool = False
    crc_b: bool = False


class Found(NamedTuple):
    """What one job found: the differing chunks as ``(first, end)`` byte offsets, and the CRC32
    of each side it was asked for (``None`` otherwise)."""

    differing: list[tuple[int, int]]
    crc_a: int | None
    crc_b: int | None


def scannable(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` can be compared here: dense CPU tensors of one size in bytes."""
    return (_memcmp is not None and a.device.type == "cpu" and b.device.type == "cpu"
            and a.is_contiguous() and b.is_contiguous()
            and a.numel() * a.element_size() == b.numel() * b.element_size())


def scan(jobs: list[Job], *, threads: int | None = None) -> list[Found]:
    """Each job's differing chunks (and CRCs), the jobs spread over ``threads`` (default: the cores).

    >>> a, b = torch.zeros(4), torch.zeros(4)
    >>> b[3] = 1
    >>> scan([Job(a, b, crc_a=True)])[0].differing, scan([Job(a, a)])[0].differing
    ([(0, 16)], [])
    """
    threads = min(len(jobs), threads or os.cpu_count() or 1)
    if threads <= 1:
        return [_one(job) for job in jobs]
    # the largest first, so that no core is left with a large one at the end
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].a.numel() * jobs[i].a.element_size())
    with ThreadPoolExecutor(threads) as pool:
        found = dict(zip(order, pool.map(lambda i: _one(jobs[i]), order)))
    return [found[i] for i in range(len(jobs))]


def _one(job: Job) -> Found:
    a, b = job.a, job.b
    n = a.numel() * a.element_size()
    pa, pb = a.data_ptr(), b.data_ptr()
    bytes_a = _buffer(pa, n) if job.crc_a else None
    bytes_b = _buffer(pb, n) if job.crc_b else None
    ca = cb = 0
    differing = []
    for first in range(0, n, CHUNK_BYTES):
        end = min(first + CHUNK_BYTES, n)
        if bytes_a is not None:
            ca = crc32(bytes_a[first:end], ca)
        if bytes_b is not None:
            cb = crc32(bytes_b[first:end], cb)
        if _memcmp(pa + first, pb + first, end - first):
            differing.append((first, end))
    return Found(differing, ca if job.crc_a else None, cb if job.crc_b else None)


def _buffer(address: int, n: int) -> memoryview:
    # the tensor's bytes in place: its owner keeps them alive for as long as the job holds it
    return memoryview((ctypes.c_char * n).from_address(address)).cast("B")
