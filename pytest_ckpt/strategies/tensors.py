"""State dicts with every value a round trip must keep: NaN, -0.0, inf, subnormals, every dtype."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = ["DTYPES", "state_dicts"]

#: dtypes both torch files and safetensors store
DTYPES: tuple[torch.dtype, ...] = (
    torch.float32, torch.float16, torch.bfloat16, torch.float64,
    torch.float8_e4m3fn, torch.float8_e5m2,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
)

_FLOAT_WIDTH = {torch.float16: 16, torch.float32: 32, torch.float64: 64}


def state_dicts(*, min_size: int = 1, max_size: int = 6,
                dtypes: tuple[torch.dtype, ...] = DTYPES, ties: bool = True) -> SearchStrategy:
    """Mappings of dotted names to small tensors of ``dtypes``: 0-dim, empty and
    non-contiguous tensors included, floats with NaN (any payload), +-0.0, +-inf
    and subnormals; with ``ties``, some names share one tensor (as tied weights do).

    >>> @given(state_dicts())                                     # doctest: +SKIP
    ... def test_round_trip(sd, tmp_path):
    ...     pc.save(sd, tmp_path / "a.safetensors")
    ...     assert pc.diff(sd, tmp_path / "a.safetensors").ok
    """
    name = st.lists(st.sampled_from(["a", "b", "layers", "0", "1", "weight"]),
                    min_size=1, max_size=3).map(".".join)
    return st.builds(
        _assemble,
        st.dictionaries(name, tensors(dtypes), min_size=min_size, max_size=max_size),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=2 if ties else 0),
    )


def tensors(dtypes: tuple[torch.dtype, ...] = DTYPES) -> SearchStrategy:
    """One small tensor (up to 3 dims of up to 4) of one of ``dtypes``."""
    return st.tuples(st.sampled_from(dtypes), st.lists(st.integers(0, 4), max_size=3)).flatmap(
        lambda ds: _filled(*ds))


def _filled(dtype: torch.dtype, shape: list[int]) -> SearchStrategy:
    n = 1
    for s in shape:
        n *= s
    if dtype == torch.bool:
        elems = st.lists(st.booleans(), min_size=n, max_size=n)
        return elems.map(lambda v: torch.tensor(v, dtype=torch.bool).reshape(shape))
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        elems = st.lists(st.integers(info.min, info.max), min_size=n, max_size=n)
        return elems.map(lambda v: torch.tensor(v, dtype=dtype).reshape(shape))
    size = torch.empty((), dtype=dtype).element_size()
    # raw bits reach every NaN payload and subnormal; drawn floats favour the special values
    raw = st.binary(min_size=n * size, max_size=n * size).map(
        lambda b: _from_bytes(b, dtype, shape))
    width = _FLOAT_WIDTH.get(dtype, 32)
    drawn = st.lists(st.floats(width=width), min_size=n, max_size=n).map(
        lambda v: torch.tensor(v, dtype=torch.float64).to(dtype).reshape(shape))
    return st.one_of(drawn, raw)


def _from_bytes(data: bytes, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
    if not data:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape)


def _assemble(sd: dict[str, torch.Tensor], links: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Tie some names to others: the same tensor, or a transposed view of it (not a tie)."""
    names = list(sd)
    for i, j in links:
        src, dst = names[i % len(names)], names[j % len(names)]
        if src == dst:
            continue
        t = sd[src]
        sd[dst] = t.t() if t.dim() == 2 and (i + j) % 2 else t
    return sd
