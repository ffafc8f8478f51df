"""Pause CPython's cyclic garbage collector around one call that reads every name.

A state dict of 200,000 tensors keeps 400,000 tracked objects alive on each
side of a comparison. Reading it allocates a few small objects per name (keys,
pairs, specs), and every so often that allocation triggers a full collection,
which walks every live tensor again: for a 200,000-tensor ``pc.diff`` that was
about a third of the time. The work creates no reference cycles, so nothing is
lost by pausing: reference counting still frees all of it at once, and the
collector resumes (only if it was running) when the call returns or raises.
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
