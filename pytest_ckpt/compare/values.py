"""Are two tensors equal, and if not, by how much: exact by default, every dtype."""

from __future__ import annotations

from typing import Iterator

import torch

#: elements per chunk on the slow path, so temporaries stay small (~16M elements)
CHUNK = 1 << 24

_INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def max_abs_diff(a: torch.Tensor, b: torch.Tensor, *, atol: float = 0.0,
                 rtol: float = 0.0) -> float | None:
    """The max absolute difference of ``a`` and ``b``, or ``None`` when they are equal.

    Exact by default: bitwise equality, except that NaN equals NaN at the same
    place (any payload). ``-0.0`` vs ``0.0`` differs (reported as ``0.0``), a
    one-ulp change differs, ``inf`` equals ``inf``; NaN against a number is
    reported as ``inf``. With ``atol``/``rtol``: ``torch.isclose`` semantics,
    ``equal_nan=True``. Meta tensors cannot be compared: ``None``.

    >>> max_abs_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
    0.5
    >>> max_abs_diff(torch.tensor([float("nan")]), torch.tensor([float("nan")])) is None
    True
    """
    if a.is_meta or b.is_meta:
        return None
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"cannot compare values of {tuple(a.shape)} {a.dtype} "
                         f"and {tuple(b.shape)} {b.dtype}")
    if a.numel() == 0:
        return None
    a, b = _plain(a), _plain(b)
    if a.is_complex():
        # complex: compare real and imaginary parts as floats
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    if atol or rtol:
        return _close_diff(a, b, atol, rtol)
    ints = _INT_OF_WIDTH[a.element_size()]
    # fast path: one pass over both tensors, no temporaries
    if torch.equal(a.view(ints), b.view(ints)):
        return None
    worst: float | None = None
    for ca, cb in _chunks(a, b):
        d = _exact_chunk(ca, cb, ints)
        if d is not None:
            worst = d if worst is None else max(worst, d)
    return worst


def _plain(t: torch.Tensor) -> torch.Tensor:
    # lazy conj/neg bits would make the bit view lie; resolving is a no-op without them
    return t.detach().cpu().resolve_conj().resolve_neg()


def _exact_chunk(a: torch.Tensor, b: torch.Tensor, ints: torch.dtype) -> float | None:
    ne = a.view(ints) != b.view(ints)
    if not bool(ne.any()):
        return None
    a, b = a[ne], b[ne]
    if a.is_floating_point():
        fa, fb = _wide(a), _wide(b)
        both_nan = fa.isnan() & fb.isnan()
        fa, fb = fa[~both_nan], fb[~both_nan]
        if fa.numel() == 0:
            return None  # only NaN payloads differed
        return _max_abs(fa, fb)
    d = _max_abs(_wide(a), _wide(b))
    # int64 values beyond 2**53 can round to equal in float64: they still differ by >= 1
    return max(d, 1.0)


def _close_diff(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> float | None:
    worst = 0.0
    close = True
    for ca, cb in _chunks(a, b):
        fa, fb = _wide(ca), _wide(cb)
        if not bool(torch.isclose(fa, fb, rtol=rtol, atol=atol, equal_nan=True).all()):
            close = False
        both_nan = fa.isnan() & fb.isnan()
        if bool(both_nan.any()):
            fa, fb = fa[~both_nan], fb[~both_nan]
        if fa.numel():
            worst = max(worst, _max_abs(fa, fb))
    return None if close else worst


def _wide(t: torch.Tensor) -> torch.Tensor:
    # float64 is exact for every narrower float and for ints up to 2**53; float8 has no arithmetic
    return t.to(torch.float64)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    same_inf = a.isinf() & (a == b)
    d = (a - b).abs()
    d = torch.where(same_inf, torch.zeros_like(d), d)
    # NaN against a number: as far apart as it gets
    d = torch.nan_to_num(d, nan=float("inf"), posinf=float("inf"))
    return float(d.max()) if d.numel() else 0.0


def _chunks(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Aligned flat pieces of ``a`` and ``b`` of about :data:`CHUNK` elements."""
    if a.dim() == 0:
        yield a.reshape(1), b.reshape(1)
        return
    if a.is_contiguous() and b.is_contiguous():
        fa, fb = a.view(-1), b.view(-1)
        for i in range(0, fa.numel(), CHUNK):
            yield fa[i:i + CHUNK], fb[i:i + CHUNK]
        return
    # non-contiguous: slice along dim 0 so only one slice is ever copied
    row = max(1, a[0].numel())
    step = max(1, CHUNK // row)
    for i in range(0, a.shape[0], step):
        yield a[i:i + step].reshape(-1), b[i:i + step].reshape(-1)
