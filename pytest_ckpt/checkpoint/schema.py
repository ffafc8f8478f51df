"""What a checkpoint holds, without its values: canonical names to shapes and dtypes."""

from __future__ import annotations

from operator import attrgetter
from types import MappingProxyType
from typing import Iterator, Mapping, NamedTuple

import torch

from ..formats.dtypes import dtype_name


_new_tuple = tuple.__new__
_shape_and_dtype = attrgetter("shape", "dtype")


class TensorSpec(NamedTuple):
    """Shape and dtype of one tensor.

    >>> TensorSpec((2, 3), torch.float32)
    TensorSpec(shape=(2, 3), dtype=torch.float32)
    """

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class Schema(Mapping[str, TensorSpec]):
    """A read-only mapping of canonical name -> :class:`TensorSpec`.

    ``located_at``: where inside the file the state dict was found (``()`` at
    top level). ``stripped``: wrapper prefixes removed, outermost first.

    >>> s = Schema({"w": TensorSpec((2,), torch.float32)})
    >>> s["w"].shape, s.located_at, s.stripped
    ((2,), (), ())
    """

    __slots__ = ("_specs", "located_at", "stripped")

    def __init__(
        self,
        specs: Mapping[str, TensorSpec],
        *,
        located_at: tuple[str | int, ...] = (),
        stripped: tuple[str, ...] = (),
    ) -> None:
        self._specs = dict(specs)
        self.located_at = tuple(located_at)
        self.stripped = tuple(stripped)

    @classmethod
    def of(cls, tensors: Mapping[str, torch.Tensor], **kw) -> "Schema":
        # Runs once per tensor (200,000 times for a large MoE), and a state dict has few
        # distinct (shape, dtype) pairs: one TensorSpec each, shared, found by a dict lookup.
        specs: dict[tuple, TensorSpec] = {}

        def new(key: tuple) -> TensorSpec:
            # tuple.__new__ skips NamedTuple's Python-level __new__
            spec = specs[key] = _new_tuple(TensorSpec, (tuple(key[0]), key[1]))
            return spec

        known = specs.get
        schema = cls({}, **kw)
        schema._specs = {name: known(key) or new(key)
                         for name, key in zip(tensors, map(_shape_and_dtype, tensors.values()))}
        return schema

    def __getitem__(self, name: str) -> TensorSpec:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:  # Mapping's default goes through __getitem__
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def specs(self) -> Mapping[str, TensorSpec]:
        """A read-only view of the underlying dict: C-speed lookups and ``keys()`` set operations."""
        return MappingProxyType(self._specs)

    def __repr__(self) -> str:
        return (
            f"Schema({len(self)} tensors, located_at={self.located_at!r}, "
            f"stripped={self.stripped!r})"
        )

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._specs.values())

    def to_dict(self) -> dict:
        """JSON-ready: ``{name: {"shape": [...], "dtype": "float32"}}``, sorted."""
        return {
            name: {"shape": list(spec.shape), "dtype": dtype_name(spec.dtype)}
            for name, spec in sorted(self._specs.items())
        }

