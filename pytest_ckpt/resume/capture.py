"""The state of a run's components: read live, frozen into a snapshot, or reduced to a fingerprint.

A *snapshot* (path -> a CPU copy of the component's state) is taken only where the check compares
values: after step ``at`` and at the end. A *fingerprint* (path -> a small value that changes when
any bit of the state changes) is taken after every step, to find the first step where runs part.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from . import streams as global_streams
from .state import Component, RunState, config_fields, is_ndarray, optimizer_params, unwrap


#: tensors up to this size are fingerprinted by a hash of their bytes, larger ones by a sum of their bits
SMALL_BYTES = 1 << 16


class Unreadable(str):
    """A component whose state could not be read (its ``state_dict()`` raised): the reason."""


def read(c: Component, names: Mapping[int, str]) -> Any:
    """The state of one component, as live objects (tensors not copied).

    ``names``: ``id(parameter)`` -> parameter name, so optimizer state is keyed by name.
    """
    obj, kind = c.obj, c.kind
    if kind == "module":
        return dict(unwrap(obj).state_dict())
    if kind == "optimizer":
        return _optimizer(obj, names)
    if kind in ("scheduler", "scaler", "state"):
        return obj.state_dict()
    if kind == "data":
        if hasattr(obj, "_num_yielded") and not callable(getattr(obj, "state_dict", None)):
            return {"batches yielded": obj._num_yielded}
        return obj.state_dict()
    if kind == "generator":
        return _generator_state(obj)
    if kind == "config":
        return config_fields(obj)
    if kind == "tensor":
        return obj.detach() if isinstance(obj, torch.Tensor) else obj
    if kind == "tensors":
        if isinstance(obj, Mapping):
            return {k: v.detach() for k, v in obj.items()}
        return [v.detach() for v in obj]
    return obj  # a counter, or a list of numbers


def read_all(rs: RunState, streams: tuple[str, ...]) -> dict[str, Any]:
    """Every component's live state by path, and each global stream in ``streams``."""
    names = rs.param_names() if rs.of_kind("optimizer") else {}  # only optimizer state is keyed by name
    out: dict[str, Any] = {}
    for c in rs:
        try:
            out[c.path] = read(c, names)
        except Exception as exc:  # noqa: BLE001 - the project's state_dict() may fail; say so, go on
            out[c.path] = Unreadable(f"{type(exc).__name__}: {exc}")
    for name in streams:
        out[name] = global_streams.read(name)
    return out


def snapshot(rs: RunState, streams: tuple[str, ...]) -> dict[str, Any]:
    """A CPU copy of every component's state (each tensor cloned once).

    >>> import torch
    >>> from pytest_ckpt.resume.state import run_state
    >>> snap = snapshot(run_state({"w": torch.ones(2), "step": 3}), ())
    >>> snap['run["w"]'], snap['run["step"]']
    (tensor([1., 1.]), 3)
    """
    return {path: freeze(value) for path, value in read_all(rs, streams).items()}


def fingerprints(rs: RunState, streams: tuple[str, ...]) -> dict[str, Any]:
    """path -> a small value equal for bitwise-equal states (no tensor copied)."""
    return {path: fingerprint(value) for path, value in read_all(rs, streams).items()}


def freeze(value: Any) -> Any:
    """A copy of ``value`` that later training cannot change, on the CPU, and picklable."""
    if isinstance(value, Unreadable):
        return value
    if isinstance(value, torch.Tensor):
        value = local(value)
        if value.device.type == "meta":
            return value
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {k: freeze(v) for k, v in value.items()}
    if is_python_rng_state(value):
        return value  # immutable already: no need to rebuild 625 ints
    if isinstance(value, tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, list):
        return [freeze(v) for v in value]
    if is_ndarray(value):
        return value.copy()
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device,
                                           enum.Enum)):
        return value
    return repr(value)  # a callable or an object in a state_dict: compared by what it says


def fingerprint(value: Any) -> Any:
    """A hashable summary of ``value``: equal when ``value`` is bitwise equal (tensors: their bits, summed).

    >>> import torch
    >>> fingerprint(torch.tensor([1.0])) == fingerprint(torch.tensor([1.0]))
    True
    >>> fingerprint(torch.tensor([1.0])) == fingerprint(torch.tensor([1.0 + 2**-23]))
    False
    """
    if isinstance(value, torch.Tensor):
        value = local(value)
        return ("tensor", tuple(value.shape), str(value.dtype), _bits(value))
    if isinstance(value, Mapping):
        return tuple((k, fingerprint(v)) for k, v in value.items())
    if is_python_rng_state(value):
        return value  # compared as it is
    if isinstance(value, (list, tuple)):
        return tuple(fingerprint(v) for v in value)
    if is_ndarray(value):
        return ("array", value.shape, str(value.dtype), hashlib.sha1(value.tobytes()).hexdigest())
    if isinstance(value, float):
        return ("float", value.hex())  # nan equals nan, -0.0 differs from 0.0: bits, not values
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return value
    return repr(value)


def local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's shard on this rank (under FSDP2 each rank compares its own shards, with no
    collective); any other tensor as it is."""
    return t.to_local() if type(t).__name__ == "DTensor" and callable(getattr(t, "to_local", None)) else t


def digest(batch: Any) -> str:
    """A short hash of a batch (tensors by dtype, shape and bytes), the same in every process.

    >>> import torch
    >>> digest(torch.arange(4)) == digest(torch.arange(4)), digest(torch.arange(4)) == digest(torch.arange(1, 5))
    (True, False)
    """
    h = hashlib.sha1()
    _feed(h, batch)
    return h.hexdigest()[:16]


def _feed(h, x: Any, depth: int = 0) -> None:
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(x, Mapping):
        h.update(b"{")
        for k, v in x.items():
            _feed(h, k, depth + 1)
            _feed(h, v, depth + 1)
    elif isinstance(x, (list, tuple)):
        h.update(b"[")
        for v in x:
            _feed(h, v, depth + 1)
    elif is_ndarray(x):
        h.update(f"A{x.dtype}{x.shape}".encode() + x.tobytes())
    elif hasattr(x, "__dict__") and depth < 4 and not isinstance(x, type):
        h.update(type(x).__qualname__.encode())
        _feed(h, vars(x), depth + 1)
    else:
        h.update(repr(x).encode())


def _bits(t: torch.Tensor) -> Any:
    t = t.detach()
    if t.device.type == "meta" or t.layout != torch.strided or t.is_quantized:
        return None
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    elif t.is_complex():
        t = torch.view_as_real(t)
    if t.device.type == "cpu" and t.numel() * t.element_size() <= SMALL_BYTES:
        # small (a random state, a counter tensor): hashing the bytes is cheaper than three torch calls
        return hashlib.sha1(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    # the integer sum of the bit patterns: exact, and moved by any one-bit change
    return int(t.contiguous().view(as_int).sum(dtype=torch.int64))


def _optimizer(opt: torch.optim.Optimizer, names: Mapping[int, str]) -> dict[str, Any]:
    sd = opt.state_dict()
    params = optimizer_params(opt)
    order = [i for group in sd["param_groups"] for i in group["params"]]
    by_index = dict(zip(order, params))  # state_dict numbers the parameters in param_groups order

    def name(i):
        p = by_index.get(i)
        return names.get(id(p), f"param {i}") if p is not None else f"param {i}"

    return {
        "state": {name(i): dict(s) for i, s in sd["state"].items()},
        "groups": [{k: v for k, v in g.items() if k not in ("params", "param_names")}
                   for g in sd["param_groups"]],
        "params": [name(i) for i in order],
    }


def _generator_state(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if hasattr(obj, "getstate"):  # random.Random
        return obj.getstate()
    if hasattr(obj, "bit_generator"):  # numpy.random.Generator
        return obj.bit_generator.state
    return obj.get_state()  # numpy.random.RandomState


def is_python_rng_state(value: Any) -> bool:
    """``random.getstate()``: ``(version, a tuple of 625 ints, gauss_next)``, one state, not 625 leaves."""
    return isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], tuple) and len(value[1]) > 600
