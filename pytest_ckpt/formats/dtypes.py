"""Dtype names as they appear in reports, stored metadata and snapshot files: ``"float32"``."""

from __future__ import annotations

import torch

__all__ = ["dtype_name", "dtype_from_name"]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``.

    >>> dtype_name(torch.bfloat16)
    'bfloat16'
    """
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """``"float32"`` (or ``"torch.float32"``) -> ``torch.float32``; ``ValueError`` on an unknown name.

    >>> dtype_from_name("int8")
    torch.int8
    """
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype
