"""The strict-load audit: ``load_state_dict(strict=False)`` calls that silently dropped keys.

The library's own loads are marked (``internal_load``) so the audit never counts them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading

_state = threading.local()


@contextlib.contextmanager
def internal_load():
    """Within this block, ``load_state_dict`` calls are the library's own."""
    depth = getattr(_state, "depth", 0)
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth


def in_internal_load() -> bool:
    return getattr(_state, "depth", 0) > 0


# -- the strict-load audit ----------------------------------------------------------------------

@dataclasses.dataclass
class DroppedLoad:
    """One ``load_state_dict(strict=False)`` call that left keys missing or unexpected."""

    module: str
    missing: list[str]
    unexpected: list[str]
    where: str  # "file.py:123" of the caller

    def describe(self) -> str:
        from .compare.ranges import collapse

        parts = []
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                runs = ", ".join(r.display for r in collapse(names)[:6])
                parts.append(f"{len(names)} {label} ({runs})")
        return (f"{self.where}: {self.module}.load_state_dict(strict=False) silently dropped "
                f"{'; '.join(parts)}")


_HERE = os.path.dirname(os.path.abspath(__file__))


def _caller() -> str:
    import torch

    skip = (_HERE, os.path.dirname(torch.__file__))
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class LoadAudit:
    """While active, every ``nn.Module.load_state_dict(strict=False)`` that dropped keys is recorded.

    >>> with LoadAudit() as audit:                        # doctest: +SKIP
    ...     model.load_state_dict(sd, strict=False)
    >>> audit.dropped                                     # doctest: +SKIP
    [DroppedLoad(module='TinyLM', missing=['layers.3.attn.weight'], ...)]
    """

    def __init__(self) -> None:
        self.dropped: list[DroppedLoad] = []
        self._original = None

    def __enter__(self) -> "LoadAudit":
        import torch

        original = torch.nn.Module.load_state_dict
        self._original = original
        audit = self

        def load_state_dict(module, state_dict, strict=True, assign=False):
            result = original(module, state_dict, strict=strict, assign=assign)
            if not strict and not in_internal_load() and (result.missing_keys or result.unexpected_keys):
                audit.dropped.append(DroppedLoad(
                    module=type(module).__name__,
                    missing=list(result.missing_keys),
                    unexpected=list(result.unexpected_keys),
                    where=_caller(),
                ))
            return result

        load_state_dict.__wrapped__ = original
        torch.nn.Module.load_state_dict = load_state_dict
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.nn.Module.load_state_dict = self._original
