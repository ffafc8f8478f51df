"""Are two tensors equal, and if not, by how much: exact by default, every dtype."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, NamedTuple

import torch

from . import bitwise

#: given a tensor to be compared byte for byte, what takes the CRC32 of its bytes (or None)
Claim = Callable[[torch.Tensor], "Callable[[int], None] | None"]

#: elements per chunk on the slow path, so temporaries stay small (~16M elements)
CHUNK = 1 << 24
#: elements per chunk of the bitwise pass: torch runs each call as one parallel region, and a
#: region waits once for a thread that another job keeps off its core (a 256K-element pass over
#: 2 GiB took 10x one call per tensor with the cores busy); a differing one is scanned again
PASS_CHUNK = 1 << 22
#: elements per chunk of the exact scan of a differing pass chunk: small enough that its
#: float64 work stays cheap
EXACT_CHUNK = 1 << 18

#: elements up to which :func:`same` first asks ``torch.equal`` of the bits (one call, no scan set up)
SMALL = 1 << 16

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
    pair = _prepared(a, b)
    if pair is None:
        return None
    a, b = pair
    if atol or rtol:
        return _close_diff(a, b, atol, rtol)
    if bitwise.scannable(a, b):
        return _exact_diff(a, b, bitwise.scan([bitwise.Job(a, b)], threads=1)[0].differing)
    return _exact_pieces(a, b, _differing(a, b))


def _prepared(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``a`` and ``b`` as their bits are compared, or ``None`` when there is nothing to compare."""
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
    return a, b


def same(a: torch.Tensor, b: torch.Tensor, *, atol: float = 0.0, rtol: float = 0.0) -> bool:
    """``max_abs_diff(a, b, atol=atol, rtol=rtol) is None``, stopping at the first difference: what a
    rule asks of a whole tensor that may differ everywhere.

    >>> same(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")]))
    True
    >>> same(torch.zeros(3), torch.tensor([0.0, 0.0, -0.0]))
    False
    """
    pair = _prepared(a, b)
    if pair is None:
        return True
    a, b = pair
    if atol or rtol:
        return _close_diff(a, b, atol, rtol) is None
    # the same bits: a resume check asks this of hundreds of small tensors (a quantized tensor's
    # bit view is not one torch can read: it takes the scan)
    ints = _INT_OF_WIDTH[a.element_size()]
    if a.numel() <= SMALL and a.layout == torch.strided and not a.is_quantized \
            and torch.equal(a.view(ints), b.view(ints)):
        return True
    pieces = (_ranges(a, b, bitwise.scan([bitwise.Job(a, b)], threads=1)[0].differing)
              if bitwise.scannable(a, b) else _differing(a, b))
    return all(d is None for d in _piece_diffs(a, pieces))


def _exact_diff(a: torch.Tensor, b: torch.Tensor, differing: list[tuple[int, int]]) -> float | None:
    """The exact rules over the byte ranges of contiguous ``a`` and ``b`` that :mod:`.bitwise` found differing."""
    return _exact_pieces(a, b, _ranges(a, b, differing)) if differing else None


def _ranges(a: torch.Tensor, b: torch.Tensor, differing: list[tuple[int, int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    size = a.element_size()
    fa, fb = a.reshape(-1), b.reshape(-1)
    return ((fa[first // size:end // size], fb[first // size:end // size]) for first, end in differing)


def _exact_pieces(a: torch.Tensor, b: torch.Tensor, pieces: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float | None:
    # an equal tensor costs one bitwise pass; a differing one the exact rules on its differing pieces only
    return max((d for d in _piece_diffs(a, pieces) if d is not None), default=None)


def _piece_diffs(a: torch.Tensor, pieces: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[float | None]:
    """The exact rules' verdict on each piece: its max abs difference, or ``None`` when its bits
    differ only in NaN payloads."""
    ints = _INT_OF_WIDTH[a.element_size()]
    buffers = None
    for ca, cb in pieces:
        if buffers is None or buffers[0].numel() < ca.numel():
            buffers = torch.empty(ca.numel(), dtype=torch.float64), torch.empty(ca.numel(), dtype=torch.float64)
        yield _exact_chunk_fast(ca, cb, ints, buffers)


def _differing(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Aligned flat pieces of ``a`` and ``b`` (at most :data:`EXACT_CHUNK` elements) whose bits
    differ, by torch's comparison: tensors :mod:`.bitwise` cannot compare (not contiguous)."""
    ints = _INT_OF_WIDTH[a.element_size()]
    # non-contiguous tensors: one bitwise pass first, since chunking them copies
    if not (a.is_contiguous() and b.is_contiguous()) and torch.equal(a.view(ints), b.view(ints)):
        return
    for ca, cb in _chunks(a, b, min(CHUNK, PASS_CHUNK)):
        if torch.equal(ca.view(ints), cb.view(ints)):
            continue
        for sa, sb in _chunks(ca, cb, EXACT_CHUNK):
            if not torch.equal(sa.view(ints), sb.view(ints)):
                yield sa, sb


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


#: elements of a tensor checked before the whole is cast (rounds_through)
ROUND_TRIP_PROBE = 1 << 16


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
    # the first elements first: a tensor that is not this rounding is told there, before the whole one
    # is cast twice (a 64 MiB weight with one changed element is neither)
    if exact.numel() > ROUND_TRIP_PROBE and rounded.is_contiguous() and exact.is_contiguous() and not same(
            rounded.view(-1)[:ROUND_TRIP_PROBE], exact.view(-1)[:ROUND_TRIP_PROBE].to(narrow).to(exact.dtype)):
        return False
    return same(rounded, exact.to(narrow).to(exact.dtype))


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


def batch_max_abs_diffs(batches: Iterable[Batch], *, atol: float = 0.0, rtol: float = 0.0,
                        claims: tuple[Claim | None, Claim | None] = (None, None)) -> dict[str, float]:
    """:func:`max_abs_diffs` of pairs already in :class:`Batch` es; a batch whose tensors
    break its promise is checked pair by pair, which raises on a mismatch.

    ``claims``: for the ``a`` and the ``b`` side, a function that, given a tensor whose bytes
    should be checksummed as they are compared (a file's record), returns what takes their
    CRC32, or ``None``; every tensor compared byte for byte is offered to it."""
    out: dict[str, float] = {}
    exact = not (atol or rtol)
    jobs: list[tuple[str, bitwise.Job, Callable | None, Callable | None]] = []
    for batch in batches:
        suspects = _differing_rows(batch) if exact else range(len(batch.names))
        for i in suspects:
            name, a0, b0 = batch.names[i], batch.a[i], batch.b[i]
            pair = _prepared(a0, b0)
            if pair is None:
                continue
            a, b = pair
            if exact and bitwise.scannable(a, b):
                take_a, take_b = (claim(t) if claim else None for claim, t in zip(claims, pair))
                job = (name, bitwise.Job(a, b, take_a is not None, take_b is not None), take_a, take_b)
                if _in_place(a, a0) and _in_place(b, b0):
                    jobs.append(job)  # no copy held: the large tensors go over the cores at once
                else:
                    _settle(out, job, bitwise.scan([job[1]], threads=1)[0])
                continue
            d = _exact_pieces(a, b, _differing(a, b)) if exact else _close_diff(a, b, atol, rtol)
            if d is not None:
                out[name] = d
    for job, found in zip(jobs, bitwise.scan([job[1] for job in jobs])):
        _settle(out, job, found)
    return out


def _in_place(prepared: torch.Tensor, given: torch.Tensor) -> bool:
    # _plain copies a GPU tensor, a bool one and lazy conj/neg bits: a batch must not hold those all at once
    return prepared.untyped_storage().data_ptr() == given.untyped_storage().data_ptr()


def _settle(out: dict[str, float], job: tuple, found: bitwise.Found) -> None:
    name, pair, take_a, take_b = job
    if take_a is not None:
        take_a(found.crc_a)
    if take_b is not None:
        take_b(found.crc_b)
    d = _exact_diff(pair.a, pair.b, found.differing)
    if d is not None:
        out[name] = d


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
