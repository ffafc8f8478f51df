"""A cast declared on purpose (``pc.load_into(..., dtype=torch.float16)``): floating tensors that
differ only by it are read in the model's dtype, as a load copies them."""

from __future__ import annotations

import dataclasses
from collections import Counter

import torch

from ..formats.dtypes import dtype_name
from .notes import Note
from .schema import Schema, TensorSpec
from .view import View


def declared_cast(target: View, source: View, dtype: torch.dtype) -> View:
    """``source`` with each floating tensor whose dtype differs from ``target``'s only by the
    declared cast (one of the two is ``dtype``) read in ``target``'s dtype, and an info note
    saying how many; every other dtype difference stays one. Only the schema changes: the
    tensors stay as stored, and ``load_state_dict`` casts them as it copies.

    >>> model = View.of_tensors("model", {"w": torch.zeros(2), "i": torch.zeros(2, dtype=torch.int64)})
    >>> half = View.of_tensors("ckpt.pt", {"w": torch.zeros(2).half(), "i": torch.zeros(2, dtype=torch.int32)})
    >>> cast = declared_cast(model, half, torch.float16)
    >>> cast.schema["w"].dtype, cast.schema["i"].dtype, cast.tensors["w"].dtype
    (torch.float32, torch.int32, torch.float16)
    >>> cast.notes[-1].text
    '1 tensor float16 in ckpt.pt, float32 in the model: read as float32, as dtype=torch.float16 declares'
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype= declares a cast of the floating tensors: {dtype} is not a floating dtype")
    wanted = target.schema.specs
    specs, casts = {}, Counter()
    for name, spec in source.schema.specs.items():
        other = wanted.get(name)
        if (other is not None and other.dtype != spec.dtype and spec.dtype.is_floating_point
                and other.dtype.is_floating_point and dtype in (spec.dtype, other.dtype)):
            casts[spec.dtype, other.dtype] += 1
            spec = TensorSpec(spec.shape, other.dtype)
        specs[name] = spec
    if not casts:
        return source
    notes = [Note(
        "dtype",
        f"{n} {'tensor' if n == 1 else 'tensors'} {dtype_name(stored)} in {source.label}, "
        f"{dtype_name(model)} in the model: read as {dtype_name(model)}, as "
        f"dtype=torch.{dtype_name(dtype)} declares",
        info=True) for (stored, model), n in casts.most_common()]
    schema = Schema(specs, located_at=source.schema.located_at, stripped=source.schema.stripped)
    return dataclasses.replace(source, schema=schema, notes=[*source.notes, *notes])
