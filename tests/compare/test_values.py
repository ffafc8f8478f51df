"""Exact value comparison: every dtype, NaN, -0.0, ulps, odd layouts."""

import math
import warnings

import pytest
import torch

from pytest_ckpt.compare import values
from pytest_ckpt.compare.values import max_abs_diff

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.float16, torch.bfloat16, torch.float32, torch.float64,
          torch.float8_e4m3fn, torch.float8_e5m2, torch.complex64, torch.complex128]


def sample(dtype, n=12):
    base = torch.arange(n, dtype=torch.float32) % 2 if dtype == torch.bool else \
        torch.arange(n, dtype=torch.float32)
    return base.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_equal_and_changed(dtype):
    a = sample(dtype)
    assert max_abs_diff(a, a.clone()) is None
    b = a.clone()
    b[3] = sample(dtype)[2]  # 3 -> 2 (bool: True -> False)
    assert max_abs_diff(a, b) == 1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_with_tolerance(dtype):
    a = sample(dtype)
    b = a.clone()
    b[3] = sample(dtype)[2]
    assert max_abs_diff(a, b, atol=1.5) is None
    assert max_abs_diff(a, b, atol=0.5) == 1.0


def test_rtol_alone_is_a_tolerance_relative_to_the_values():
    # 1000 vs 1000.5: 5e-4 relative, 0.5 absolute. rtol alone must be honoured (not read as
    # "exact"), and it must scale with the values (0.5 is far beyond any rtol of 1e-3 near 0)
    a, b = torch.tensor([1000.0, 2.0]), torch.tensor([1000.5, 2.0])
    assert max_abs_diff(a, b, rtol=1e-3) is None
    assert max_abs_diff(a, b, rtol=1e-4) == 0.5
    # the early-stopping equality the resume check and the cast rule ask, the same way
    assert values.same(a, b, rtol=1e-3) and not values.same(a, b, rtol=1e-4)


def test_nan_at_the_same_place_is_equal_within_a_tolerance_too():
    a = torch.tensor([1.0, float("nan"), 3.0])
    assert max_abs_diff(a, torch.tensor([1.1, float("nan"), 3.0]), atol=0.5) is None
    assert max_abs_diff(a, torch.tensor([1.1, 2.0, 3.0]), atol=0.5) == math.inf  # NaN against a number


@pytest.mark.parametrize("dtype, ints", [(torch.float16, torch.int16), (torch.bfloat16, torch.int16),
                                         (torch.float32, torch.int32), (torch.float64, torch.int64)])
def test_one_ulp_is_a_difference(dtype, ints):
    a = torch.tensor([1.0, 2.0], dtype=dtype)
    b = (a.view(ints) + torch.tensor([0, 1], dtype=ints)).view(dtype)  # next float up
    d = max_abs_diff(a, b)
    assert d is not None and 0 < d < 0.02


def test_nan_same_place_equal_any_payload():
    a = torch.tensor([1.0, float("nan"), 3.0])
    b = a.clone()
    bits = b.view(torch.int32)
    bits[1] = 0x7FC00001  # another quiet NaN payload
    assert math.isnan(b[1])
    assert max_abs_diff(a, b) is None


def test_nan_different_place_differs():
    a = torch.tensor([float("nan"), 2.0])
    b = torch.tensor([1.0, float("nan")])
    assert max_abs_diff(a, b) == math.inf
    assert max_abs_diff(a, b, atol=1e9) == math.inf


def test_negative_zero_is_a_difference_of_zero():
    assert max_abs_diff(torch.tensor([0.0]), torch.tensor([-0.0])) == 0.0
    assert max_abs_diff(torch.tensor([0.0]), torch.tensor([-0.0]), atol=1e-6) is None


def test_inf():
    inf = float("inf")
    assert max_abs_diff(torch.tensor([inf, -inf]), torch.tensor([inf, -inf])) is None
    assert max_abs_diff(torch.tensor([inf]), torch.tensor([1.0])) == math.inf
    assert max_abs_diff(torch.tensor([inf]), torch.tensor([-inf])) == math.inf


def test_large_int64_off_by_one():
    assert max_abs_diff(torch.tensor([2**60]), torch.tensor([2**60 + 1])) == 1.0


def test_zero_dim_empty_meta():
    assert max_abs_diff(torch.tensor(1.5), torch.tensor(1.5)) is None
    assert max_abs_diff(torch.tensor(1.5), torch.tensor(2.0)) == 0.5
    assert max_abs_diff(torch.zeros(0, 3), torch.zeros(0, 3)) is None
    assert max_abs_diff(torch.zeros(2, device="meta"), torch.ones(2)) is None


def test_non_contiguous_and_mixed_layouts():
    base = torch.arange(24.0).reshape(4, 6)
    a = base.t()  # non-contiguous
    b = base.t().contiguous()
    assert max_abs_diff(a, b) is None
    b[5, 3] += 7
    assert max_abs_diff(a, b) == 7.0
    assert max_abs_diff(base[:, ::2], base[:, ::2].clone()) is None


def test_conj_view_compared_by_value():
    c = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)
    assert max_abs_diff(c.conj(), c.conj().resolve_conj()) is None
    assert max_abs_diff(c.conj(), c) == 4.0  # per component: |-2 - 2|


def test_chunked_path(monkeypatch):
    monkeypatch.setattr(values, "CHUNK", 7)
    a = torch.arange(100.0).reshape(10, 10)
    b = a.clone()
    b[9, 9] = 0.0
    b[0, 1] = 1.5
    assert max_abs_diff(a, b) == 99.0
    assert max_abs_diff(a.t(), b.t()) == 99.0
    assert max_abs_diff(a, b, atol=100) is None


def test_mismatched_shape_or_dtype_raises():
    with pytest.raises(ValueError):
        max_abs_diff(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError):
        max_abs_diff(torch.zeros(2), torch.zeros(2, dtype=torch.float64))


def test_batched_comparison_agrees_with_the_single_one():
    from pytest_ckpt.compare.values import max_abs_diff, max_abs_diffs

    torch.manual_seed(0)
    pairs = []
    for i in range(300):
        shape = [(3,), (2, 5), (4, 1, 2), (7,)][i % 4]
        dtype = [torch.float32, torch.bfloat16, torch.int64, torch.float16, torch.bool][i % 5]
        a = torch.randn(shape).to(dtype)
        b = a.clone()
        kind = i % 7
        if kind == 1:
            b.view(-1)[0] = (~b.view(-1)[0]) if dtype == torch.bool else b.view(-1)[0] + 1
        elif kind == 2 and dtype.is_floating_point:
            a.view(-1)[-1], b.view(-1)[-1] = float("nan"), float("nan")
        elif kind == 3 and dtype.is_floating_point:
            a.view(-1)[0], b.view(-1)[0] = 0.0, -0.0
        elif kind == 4:
            b = b.t() if b.dim() == 2 else b  # a transposed view: other shape, skipped below
        pairs.append((f"t{i}", a, b))
    pairs = [p for p in pairs if p[1].shape == p[2].shape]
    expected = {n: d for n, a, b in pairs if (d := max_abs_diff(a, b)) is not None}
    assert max_abs_diffs(pairs) == expected
    assert expected  # the mix has differences to find


def test_batches_that_break_their_promise_fall_back_to_pairs():
    from pytest_ckpt.compare.values import Batch, batch_max_abs_diffs, max_abs_diffs

    meta = torch.empty(2, device="meta")
    # a meta tensor inside a batch of CPU ones: stacking fails, each pair is checked alone
    assert max_abs_diffs([("m", meta, torch.zeros(2)), ("w", torch.zeros(2), torch.ones(2))]) \
        == {"w": 1.0}
    # b sides of another shape than their a sides: the pair-by-pair check raises
    bad = Batch(["x", "y"], [torch.zeros(2), torch.zeros(2)], [torch.zeros(3), torch.zeros(3)])
    with pytest.raises(ValueError, match="cannot compare"):
        batch_max_abs_diffs([bad])
    with pytest.raises(ValueError, match="cannot compare"):
        max_abs_diffs([("x", torch.zeros(2), torch.zeros(2)), ("y", torch.zeros(2), torch.zeros(3))])


def test_a_bool_byte_other_than_one_is_true_as_torch_reads_it(tmp_path):
    # a file's bool byte 0x7F: torch reads True, and torch.equal calls it equal to a saved True
    import pytest_ckpt as pc

    saved = torch.tensor([True, False, True])
    odd = saved.clone()
    odd.view(torch.uint8)[0] = 0x7F
    assert torch.equal(saved, odd)
    assert max_abs_diff(saved, odd) is None
    assert values.max_abs_diffs([("m", saved, odd), ("n", saved, ~saved)]) == {"n": 1.0}
    path = tmp_path / "mask.pt"
    torch.save({"m": odd}, path)
    assert pc.diff({"m": saved}, path).ok
    assert not pc.diff({"m": ~saved}, path).ok


def test_same_is_max_abs_diff_is_none_on_every_layout_and_special_value():
    nan_payload = torch.tensor([1.0, float("nan")]).view(torch.int32)
    nan_payload[1] += 1  # another NaN: equal, as max_abs_diff says
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    pairs = [(torch.tensor([1.0, float("nan")]), nan_payload.view(torch.float32)),
             (torch.zeros(3), torch.tensor([0.0, 0.0, -0.0])), (a, a.clone()), (a.t(), a.clone().t()),
             (a, a + torch.tensor([0.0, 0.0, 1e-7])), (torch.arange(5), torch.arange(5)),
             (torch.ones(70_000), torch.cat([torch.ones(69_999), torch.zeros(1)]))]
    for x, y in pairs:
        for tol in ({}, {"atol": 1e-6}):
            assert values.same(x, y, **tol) == (max_abs_diff(x, y, **tol) is None), (x, y, tol)
    assert not values.same(*pairs[1]) and values.same(*pairs[0]) and not values.same(*pairs[-1])


def test_same_reads_a_quantized_tensor_without_viewing_its_bits():
    # a quantized tensor viewed as int8 is a tensor torch crashes on: the fast path must leave it to the scan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantize_per_tensor is deprecated, still loadable
        q = torch.quantize_per_tensor(torch.linspace(-1, 1, 8), 0.1, 0, torch.qint8)
    assert values.same(q, q.clone())
