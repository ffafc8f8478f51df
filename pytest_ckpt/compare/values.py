"""Are two tensors equal, and if not, by how much: exact by default, every dtype."""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple

import torch

#: elements per chunk on the slow path, so temporaries stay small (~16M elements)
CHUNK = 1 << 24
#: elements per chunk of the exact scan: large enough that per-chunk overhead is lost in
#: the memory traffic, small enough that a differing chunk's float64 work stays cheap
EXACT_CHUNK = 1 << 18

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
    if a is b:
        return None  # the same tensor object holds the same bits
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
    contiguous = a.is_contiguous() and b.is_contiguous()
    # non-contiguous tensors: one bitwise pass first, since chunking them copies
    if not contiguous and torch.equal(a.view(ints), b.view(ints)):
        return None
    # contiguous ones are scanned once, chunk by chunk: an equal tensor costs one pass,
    # a differing one that pass plus the exact rules on its differing chunks only
    worst: float | None = None
    buffers = None
    for ca, cb in _chunks(a, b, min(CHUNK, EXACT_CHUNK)):
        if torch.equal(ca.view(ints), cb.view(ints)):
            continue
        if buffers is None or buffers[0].numel() < ca.numel():
            buffers = torch.empty(ca.numel(), dtype=torch.float64), torch.empty(ca.numel(), dtype=torch.float64)
        d = _exact_chunk_fast(ca, cb, ints, buffers)
        if d is not None:
            worst = d if worst is None else max(worst, d)
    return worst


#: tensors up to this many elements are compared in batches: per-call overhead dominates them
SMALL = 1 << 14


class Batch(NamedTuple):
    """Tensors compared in one go: ``a[i]`` against ``b[i]``, reported as ``names[i]``.

    Every ``a`` has one dtype and shape, and so has every ``b`` (a comparison
    batches by schema entry, reading no tensor attribute).
    """

    names: list[str]
    a: list[torch.Tensor]
    b: list[torch.Tensor]


#: the narrow dtypes a save or a load rounds weights through (``.half()``, ``.bfloat16()`` and back)
ROUND_TRIP_DTYPES = (torch.float16, torch.bfloat16)


def rounds_through(rounded: torch.Tensor, exact: torch.Tensor, narrow: torch.dtype) -> bool:
    """Is ``rounded`` exactly ``exact`` cast to the narrower ``narrow`` and back (same shape and dtype)?
    The one test of an fp16/bf16 round trip, for the diff rules and the resume check alike.

    >>> x = torch.tensor([0.1, 1/3])
    >>> rounds_through(x.half().float(), x, torch.float16), rounds_through(x + 1e-3, x, torch.float16)
    (True, False)
    """
    if (not exact.is_floating_point() or exact.is_meta or rounded.is_meta or rounded.dtype != exact.dtype
            or rounded.shape != exact.shape or exact.dtype.itemsize <= narrow.itemsize):
        return False
    return max_abs_diff(rounded, exact.to(narrow).to(exact.dtype)) is None


def max_abs_diffs(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]], *, atol: float = 0.0,
                  rtol: float = 0.0) -> dict[str, float]:
    """:func:`max_abs_diff` over many ``(name, a, b)`` pairs; only the differing names are returned.

    Small tensors are checked in one bitwise comparison per (dtype, shape), so
    a state dict of 200,000 small tensors costs a few operations, not 200,000;
    only the tensors whose bits differ go through the exact rules.

    >>> max_abs_diffs([("w", torch.zeros(2), torch.ones(2)), ("b", torch.ones(1), torch.ones(1))])
    {'w': 1.0}
    """
    batches: dict[tuple, Batch] = {}
    for name, a, b in pairs:
        key = (a.dtype, b.dtype, a.shape)
        batch = batches.get(key) or batches.setdefault(key, Batch([], [], []))
        batch.names.append(name)
        batch.a.append(a)
        batch.b.append(b)
    return batch_max_abs_diffs(batches.values(), atol=atol, rtol=rtol)


def batch_max_abs_diffs(batches: Iterable[Batch], *, atol: float = 0.0,
                        rtol: float = 0.0) -> dict[str, float]:
    """:func:`max_abs_diffs` of pairs already in :class:`Batch` es; a batch whose tensors
    break its promise is checked pair by pair, which raises on a mismatch."""
    out: dict[str, float] = {}
    exact = not (atol or rtol)
    for batch in batches:
        suspects = _differing_rows(batch) if exact else range(len(batch.names))
        for i in suspects:
            d = max_abs_diff(batch.a[i], batch.b[i], atol=atol, rtol=rtol)
            if d is not None:
                out[batch.names[i]] = d
    return out


def _differing_rows(batch: Batch) -> Iterable[int]:
    """Indices into ``batch`` of the pairs whose bits may differ: one stacked comparison
    for a batch of small tensors, every index otherwise (each is then scanned on its own)."""
    n, a0, b0 = len(batch.names), batch.a[0], batch.b[0]
    dtype = a0.dtype
    if (n == 1 or dtype.is_complex or b0.dtype is not dtype or a0.shape != b0.shape
            or not 0 < a0.numel() <= SMALL):
        return range(n)
    ints = _INT_OF_WIDTH[dtype.itemsize]
    with torch.no_grad():
        try:
            # stacking copies, which resolves lazy neg bits: the bit views see the values
            flat_a, flat_b = torch.stack(batch.a), torch.stack(batch.b)
        except RuntimeError:  # devices or shapes differ within the batch
            return range(n)
        if (flat_a.shape != flat_b.shape or flat_a.dtype is not dtype
                or flat_b.dtype is not dtype or flat_a.is_meta or flat_b.is_meta):
            return range(n)
        flat_a, flat_b = flat_a.view(ints).reshape(n, -1), flat_b.view(ints).reshape(n, -1)
        if torch.equal(flat_a, flat_b):
            return ()
        return flat_a.ne(flat_b).any(1).nonzero().squeeze(1).tolist()


def _exact_chunk_fast(a: torch.Tensor, b: torch.Tensor, ints: torch.dtype,
                      buffers: tuple[torch.Tensor, torch.Tensor]) -> float | None:
    # max |a - b| over the whole chunk in float64, in reused buffers: equal elements give 0,
    # so this is the max over the differing ones. NaN means NaNs or equal infinities are
    # present: only then the element-wise rules of _exact_chunk are needed.
    wa, wb = buffers[0][:a.numel()], buffers[1][:a.numel()]
    wa.copy_(a)
    wb.copy_(b)
    d = float(wa.sub_(wb).abs_().max())
    if d != d:
        return _exact_chunk(a, b, ints)
    return d if a.is_floating_point() else max(d, 1.0)


def _plain(t: torch.Tensor) -> torch.Tensor:
    # lazy conj/neg bits would make the bit view lie; each step is skipped when not needed,
    # since this runs once per tensor (200,000 times for a large MoE)
    if t.requires_grad:
        t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.dtype == torch.bool:  # torch reads any non-zero byte as True: compare what torch compares
        t = t.view(torch.uint8).ne(0)
    return t


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


def _chunks(a: torch.Tensor, b: torch.Tensor, size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Aligned flat pieces of ``a`` and ``b`` of about ``size`` (default :data:`CHUNK`) elements."""
    size = size or CHUNK
    if a.dim() == 0:
        yield a.reshape(1), b.reshape(1)
        return
    if a.is_contiguous() and b.is_contiguous():
        fa, fb = a.view(-1), b.view(-1)
        for i in range(0, fa.numel(), size):
            yield fa[i:i + size], fb[i:i + size]
        return
    # non-contiguous: slice along dim 0 so only one slice is ever copied
    row = max(1, a[0].numel())
    step = max(1, size // row)
    for i in range(0, a.shape[0], step):
        yield a[i:i + step].reshape(-1), b[i:i + step].reshape(-1)
