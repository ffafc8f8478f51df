"""Pause CPython's cyclic garbage collector around one call that reads every name.

A comparison of two 200,000-tensor state dicts keeps 400,000 tracked objects
alive. Reading them allocates small objects per name (keys, specs), and every
so often that triggers a full collection, which walks every live tensor again:
15% of such a ``pc.diff`` when first measured, about 5% once the per-name
allocations were cut. The work creates no reference cycles, so nothing is lost
by pausing: reference counting still frees all of it, and the collector
resumes (only if it was running) when the call returns or raises.
"""

from __future__ import annotations

import functools
import gc
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def gc_paused(func: F) -> F:
    """Decorate ``func`` so that it runs with the cyclic collector paused.

    >>> @gc_paused
    ... def enabled():
    ...     return gc.isenabled()
    >>> enabled(), gc.isenabled()
    (False, True)
    """
    @functools.wraps(func)
    def paused(*args, **kwargs):
        if not gc.isenabled():
            return func(*args, **kwargs)  # already paused, by a caller or by the user
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.enable()

    return paused  # type: ignore[return-value]
