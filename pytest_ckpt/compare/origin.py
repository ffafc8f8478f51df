"""Where a loaded state dict came from, tensor by tensor: the previous checkpoint, the new one,
or neither (a torn write, a fresh initialisation, a tensor that is missing).

>>> import torch
>>> a = {"w": torch.zeros(2), "b": torch.ones(1)}
>>> b = {"w": torch.ones(2), "b": torch.ones(1)}
>>> origin({"w": torch.ones(2), "b": torch.ones(1)}, a, b).verdict
'new'
>>> str(origin({"w": torch.full((2,), 3.0), "b": torch.ones(1)}, a, b))
'0 tensors from the previous checkpoint, 0 from the new one, 1 from neither (1 the same in both)'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from .values import same


@dataclass(frozen=True)
class Origin:
    """Counts over the names of the previous checkpoint ``a`` and the new one ``b``."""

    from_a: int = 0
    from_b: int = 0
    #: equal in ``a`` and ``b``, and loaded so: tells nothing apart
    same: int = 0
    #: loaded, but equal to neither (or of another shape or dtype)
    neither: int = 0
    #: names of ``a`` or ``b`` the load did not return
    missing: list[str] = field(default_factory=list)
    #: names the load returned that neither checkpoint holds
    extra: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``"previous"`` or ``"new"`` (the load returned that checkpoint exactly), ``"none"``
        (no tensor from either: a fresh model), else ``"mixed"``."""
        if not self.neither and not self.missing and not self.extra:
            if not self.from_b:
                return "previous"
            if not self.from_a:
                return "new"
        if not self.from_a and not self.from_b and (self.neither or self.missing):
            return "none"
        return "mixed"

    def __str__(self) -> str:
        parts = [f"{self.from_a} tensors from the previous checkpoint, {self.from_b} from the new one, "
                 f"{self.neither + len(self.missing)} from neither"]
        extras = []
        if self.same:
            extras.append(f"{self.same} the same in both")
        if self.missing:
            extras.append(f"{len(self.missing)} missing: {', '.join(self.missing[:3])}"
                          + (", ..." if len(self.missing) > 3 else ""))
        if self.extra:
            extras.append(f"{len(self.extra)} unexpected")
        return parts[0] + (f" ({'; '.join(extras)})" if extras else "")


def _equal(x: torch.Tensor, y: torch.Tensor | None) -> bool:
    if y is None or x.shape != y.shape or x.dtype != y.dtype:
        return False
    return same(x, y)


def origin(loaded: Mapping[str, torch.Tensor], a: Mapping[str, torch.Tensor],
           b: Mapping[str, torch.Tensor]) -> Origin:
    """Which of ``a`` (previous) and ``b`` (new) each tensor of ``loaded`` equals, exactly."""
    from_a = from_b = same = neither = 0
    for name, tensor in loaded.items():
        in_a, in_b = _equal(tensor, a.get(name)), _equal(tensor, b.get(name))
        if in_a and in_b:
            same += 1
        elif in_a:
            from_a += 1
        elif in_b:
            from_b += 1
        elif name in a or name in b:
            neither += 1
    names = set(a) | set(b)
    return Origin(from_a, from_b, same, neither,
                  missing=sorted(names - set(loaded)), extra=sorted(set(loaded) - names))
