"""The strict-load audit: ``load_state_dict(strict=False)`` calls that silently dropped keys.

A call is known by its caller: the first frame outside torch and safetensors (whose
``load_model`` calls it for you). The library's own loads (``pc.load_into`` copies what it
has already checked and reported) come from this package's files and are never counted.
A name left missing whose tensor is tied to a name the state dict did load is loaded
through the tie (``safetensors.torch.load_model`` stores a tied weight once): not dropped.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import sys

from ..errors import PACKAGE_DIR

@dataclasses.dataclass
class DroppedLoad:
    """One ``load_state_dict(strict=False)`` call that left keys missing or unexpected."""

    module: str
    missing: list[str]
    unexpected: list[str]
    where: str  # "file.py:123" of the caller

    def describe(self) -> str:
        from ..compare.ranges import collapse

        parts = []
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                runs = ", ".join(r.display for r in collapse(names)[:6])
                parts.append(f"{len(names)} {label} ({runs})")
        return (f"{self.where}: {self.module}.load_state_dict(strict=False) silently dropped "
                f"{'; '.join(parts)}")




#: packages that call ``load_state_dict(strict=False)`` on the caller's behalf: the caller is above them
LOADERS = ("torch", "safetensors")


def _caller() -> tuple[str, bool]:
    """``("file.py:123", internal)`` of the code that called ``load_state_dict``: the first
    frame outside :data:`LOADERS`; ``internal`` when that frame is this package's own."""
    loaders = tuple(os.path.dirname(sys.modules[name].__file__) + os.sep
                    for name in LOADERS if getattr(sys.modules.get(name), "__file__", None))
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(loaders):
        frame = frame.f_back
    if frame is None:
        return "<unknown>", False
    filename = frame.f_code.co_filename
    return f"{filename}:{frame.f_lineno}", filename.startswith(PACKAGE_DIR)


def loaded_through_ties(module, missing: list[str], state_dict) -> list[str]:
    """``missing`` less the names tied to a name ``state_dict`` loaded: one tensor, loaded once.

    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Embedding(3, 2), torch.nn.Linear(2, 3, bias=False))
    >>> m[1].weight = m[0].weight
    >>> loaded_through_ties(m, ["1.weight"], {"0.weight": torch.zeros(3, 2)})
    []
    """
    from ..checkpoint.ties import module_tie_groups

    if not missing:
        return missing
    gone = set(missing)
    through = set()
    for group in module_tie_groups(module):
        if any(name in state_dict and name not in gone for name in group):
            through.update(group)
    return [name for name in missing if name not in through]


class LoadAudit:
    """While active, every ``nn.Module.load_state_dict(strict=False)`` that dropped keys is recorded.

    >>> with LoadAudit() as audit:                        # doctest: +SKIP
    ...     model.load_state_dict(sd, strict=False)
    >>> audit.dropped                                     # doctest: +SKIP
    [DroppedLoad(module='TinyLM', missing=['layers.3.attn.weight'], ...)]
    """

    def __init__(self, allow: tuple[str, ...] = ()) -> None:
        self.dropped: list[DroppedLoad] = []
        #: name patterns (fnmatch) whose drop is intended: a LoRA base, a projection kept fresh
        self.allow = tuple(allow)
        self._original = None

    def intended(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.allow)

    def __enter__(self) -> "LoadAudit":
        import torch

        original = torch.nn.Module.load_state_dict
        self._original = original
        audit = self

        def load_state_dict(module, state_dict, strict=True, assign=False):
            __tracebackhide__ = True
            result = original(module, state_dict, strict=strict, assign=assign)
            if not strict and (result.missing_keys or result.unexpected_keys):
                missing = [n for n in loaded_through_ties(module, result.missing_keys, state_dict)
                           if not audit.intended(n)]
                unexpected = [n for n in result.unexpected_keys if not audit.intended(n)]
                where, internal = _caller()
                if (missing or unexpected) and not internal:
                    audit.dropped.append(DroppedLoad(
                        module=type(module).__name__,
                        missing=missing,
                        unexpected=unexpected,
                        where=where,
                    ))
            return result

        load_state_dict.__wrapped__ = original
        torch.nn.Module.load_state_dict = load_state_dict
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.nn.Module.load_state_dict = self._original
