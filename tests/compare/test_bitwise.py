"""The byte pass: every differing chunk found (and only those), each side's CRC32 of exactly its
bytes, alike on one thread and on several."""

from __future__ import annotations

import zlib

import torch

from pytest_ckpt.compare import bitwise
from pytest_ckpt.compare.values import max_abs_diff, max_abs_diffs

CHUNK = bitwise.CHUNK_BYTES


def test_the_differing_chunks_and_the_crcs_of_both_sides():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3 * CHUNK // 4 + 5, generator=g)  # three chunks and a partial fourth
    b = a.clone()
    b[0] += 1  # first byte of the first chunk
    b[2 * CHUNK // 4 - 1] += 1  # last element of the second chunk
    b[-1] += 1  # the partial chunk
    for threads in (1, 2):
        found = bitwise.scan([bitwise.Job(a, b, True, True), bitwise.Job(a, a.clone(), True)], threads=threads)
        n = a.numel() * 4
        assert found[0].differing == [(0, CHUNK), (CHUNK, 2 * CHUNK), (3 * CHUNK, n)]
        assert found[0].crc_a == zlib.crc32(a.numpy().tobytes())
        assert found[0].crc_b == zlib.crc32(b.numpy().tobytes())
        assert found[1].differing == [] and found[1].crc_b is None


def test_differences_in_far_apart_chunks_give_the_worst_of_them():
    a = torch.zeros(5 * CHUNK // 8, dtype=torch.float64)
    b = a.clone()
    b[3] = 0.5
    b[-2] = -2.0
    assert max_abs_diff(a, b) == 2.0
    assert max_abs_diffs([("x", a, b), ("y", a, a.clone())]) == {"x": 2.0}
    c = a.clone()
    c[CHUNK // 8] = float("nan")  # NaN against a number, in the second chunk only
    assert max_abs_diff(a, c) == float("inf")


def test_tensors_it_cannot_compare_go_through_torch():
    a = torch.arange(12.0).reshape(3, 4)
    assert not bitwise.scannable(a.t(), a.t().contiguous())  # not contiguous
    assert bitwise.scannable(a, a.clone())
    b = a.t().contiguous()
    b[1, 2] = 100.0
    assert max_abs_diff(a.t(), b) == 100.0 - a.t()[1, 2].item()
