"""Tied weights: which names are one tensor, in a state dict or a live module."""

from __future__ import annotations

from collections import Counter, defaultdict
from operator import methodcaller
from typing import Any, Callable, Hashable, Mapping

import torch

__all__ = ["storage_key", "tie_groups", "module_tie_groups"]

_data_ptr = methodcaller("data_ptr")


def storage_key(tensor: torch.Tensor) -> Hashable | None:
    """Identity of the memory a tensor views; ``None`` when it has none to share.

    Two names are tied when their tensors view the same bytes the same way:
    same storage, offset, shape, stride and dtype. A meta tensor has no address:
    ``None`` (a file's reader knows its storages: ``Contents.tie_key``).
    """
    if tensor.is_meta:
        return None
    # data_ptr() is the storage address plus the offset: one call instead of three
    ptr = tensor.data_ptr()
    if ptr == 0 or tensor.numel() == 0:
        return None  # empty tensors all sit at address 0: sharing means nothing
    return (tensor.device.type, ptr, tensor.shape, tensor.stride(), tensor.dtype)


def tie_groups(tensors: Mapping[str, torch.Tensor],
               key: Callable[[torch.Tensor], Hashable | None] | None = None
               ) -> list[tuple[str, ...]]:
    """Groups (two or more, sorted) of names whose tensors are the same storage view.

    ``key`` identifies a tensor's storage view (default :func:`storage_key`,
    which also knows meta tensors read from torch files). A ``None`` key is
    never grouped.

    >>> w = torch.zeros(2)
    >>> tie_groups({"emb.weight": w, "head.weight": w, "bias": torch.zeros(2)})
    [('emb.weight', 'head.weight')]
    """
    if key is None:
        tensors = _sharing_an_address(tensors)
        key = storage_key
    found: dict[Any, list[str]] = defaultdict(list)
    for name, tensor in tensors.items():
        k = key(tensor)
        if k is not None:
            found[k].append(name)
    return sorted(tuple(sorted(g)) for g in found.values() if len(g) > 1)


def _sharing_an_address(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Ties are rare: bucket by address first (one cheap call per tensor), and build the
    # full key only for tensors that share an address with another.
    ptrs = list(map(_data_ptr, tensors.values()))  # map runs at C speed: once per tensor
    if len(set(ptrs)) == len(ptrs):
        return {}  # every address once: no ties (the usual case)
    shared = {p for p, n in Counter(ptrs).items() if n > 1 and p}
    return {name: t for (name, t), p in zip(tensors.items(), ptrs) if p in shared}


def module_tie_groups(module: torch.nn.Module,
                      rename: Callable[[str], str] | None = None) -> list[tuple[str, ...]]:
    """Tie groups of a live module: parameters and buffers that are the same object.

    Names are the module's ``state_dict`` names (non-persistent buffers left
    out), passed through ``rename`` (e.g. the canonicalizer) when given.

    >>> m = torch.nn.Sequential(torch.nn.Embedding(3, 2), torch.nn.Linear(2, 3, bias=False))
    >>> m[1].weight = m[0].weight
    >>> module_tie_groups(m)
    [('0.weight', '1.weight')]
    """
    in_state = set(module.state_dict(keep_vars=True))
    found: dict[int, list[str]] = defaultdict(list)
    named = list(module.named_parameters(remove_duplicate=False))
    named += list(module.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        if tensor is not None and name in in_state:
            found[id(tensor)].append(rename(name) if rename else name)
    groups = (tuple(sorted(set(g))) for g in found.values())
    return sorted(g for g in groups if len(g) > 1)
