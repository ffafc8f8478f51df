"""Any value as JSON-ready data: the one conversion used for stored configs, reports and snapshots."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Mapping

import torch

from .dtypes import dtype_name

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data (``json.dumps(..., allow_nan=False)`` accepts it).

    dtypes become names (``"float32"``), tuples and lists lists, sets sorted lists,
    enums their value, mappings dicts with string keys, objects with ``to_dict()``
    that dict, other dataclasses their fields, non-finite floats strings (``"inf"``, ``"nan"``), anything
    else its ``str`` (its ``repr`` when it defines one of its own, as sentinels do).

    >>> jsonable({"dtype": torch.bfloat16, "dims": (4, 8), "eps": float("inf")})
    {'dtype': 'bfloat16', 'dims': [4, 8], 'eps': 'inf'}
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if callable(getattr(value, "to_dict", None)) and not isinstance(value, type):
        # before dataclass fields: transformers 5 configs are dataclasses whose declared
        # fields leave out most of the config (num_hidden_layers among them)
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in sorted(value, key=repr)]
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    own_repr = type(value).__repr__ is not object.__repr__
    return repr(value) if own_repr and type(value).__str__ is object.__str__ else str(value)
