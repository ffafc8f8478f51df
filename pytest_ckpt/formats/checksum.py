"""The one CRC32 every reader and writer of pytest-ckpt computes: a faster implementation is a
change here only.

ISA-L's (python-isal, the ``fast`` extra: ``pip install pytest-ckpt[fast]``) when it is installed,
zlib's otherwise; both give zlib's exact CRC-32. ISA-L's folds with carry-less multiplication
(PCLMULQDQ, VPCLMULQDQ on AVX-512), 5-20 times zlib's table-driven loop. Set
``PYTEST_CKPT_CRC=zlib`` to use zlib's even where python-isal is installed.
"""

from __future__ import annotations

import os
import zlib
from typing import Callable

#: the environment variable that picks the implementation: ``zlib`` forces the fallback
ENV = "PYTEST_CKPT_CRC"

_isal: Callable[..., int] | None | bool = False  # False: not looked for yet


def implementation() -> str:
    """The name of the CRC32 in use: ``"isal"`` (python-isal) or ``"zlib"``.

    >>> implementation() in ("isal", "zlib")
    True
    """
    return _choose()[0]


def crc32(data, value: int = 0, *, fast: bool = True) -> int:
    """The CRC32 of ``data`` (any bytes-like object), continuing from ``value``.

    It lets go of the GIL, so several threads can checksum at once. ``fast=False``: zlib's,
    whatever is installed.

    >>> f"{crc32(b'abc'):08x}"
    '352441c2'
    >>> crc32(b"c", crc32(b"ab")) == crc32(b"abc") == crc32(b"abc", fast=False)
    True
    """
    if not fast:
        return zlib.crc32(data, value)
    return _choose()[1](data, value)


def _choose() -> tuple[str, Callable[..., int]]:
    # the environment is read on every call (a test or a run may change it); python-isal is
    # imported on first use, not on import: its few ms are no cost a plugin start should pay
    global _isal
    if os.environ.get(ENV, "").strip().lower() == "zlib":
        return "zlib", zlib.crc32
    if _isal is False:
        try:
            from isal.isal_zlib import crc32 as _isal
        except ImportError:
            _isal = None
    return ("isal", _isal) if _isal else ("zlib", zlib.crc32)
