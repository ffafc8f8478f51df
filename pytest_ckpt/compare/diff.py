"""The result of comparing two sources: data only. ``pytest_ckpt.report`` renders it
(``CheckpointDiff``, the public class, adds ``str()`` and ``to_dict()``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..checkpoint.notes import Note


@dataclass
class Diff:
    """Differences between *expected* (what the code builds) and *actual* (what is on disk).

    ``shape``/``dtype``/``config`` map a name to ``(expected, actual)``;
    ``values`` maps a name to the max absolute difference; ``ties`` lists the
    tie groups of expected that actual breaks.

    >>> d = Diff(expected="model", actual="ckpt.pt")
    >>> d.ok
    True
    """

    expected: str = "expected"
    actual: str = "actual"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: names in expected only that the caller declared may be absent (``expect_missing=``)
    expected_missing: list[str] = field(default_factory=list)
    shape: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    dtype: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    ties: list[tuple[str, ...]] = field(default_factory=list)
    #: tie groups (of ``ties``) the actual side stores as copies whose values differ:
    #: group -> (largest max-abs difference between the copies, the name whose copy a load keeps)
    tie_copies: dict[tuple[str, ...], tuple[float, str]] = field(default_factory=dict)
    #: config field -> (expected, actual); a difference only when the comparison is config-strict
    config: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    config_strict: bool = False
    notes: list[Note] = field(default_factory=list)
    #: per side: located_at, stripped, format, tensor count, config (for to_dict/report)
    expected_info: dict = field(default_factory=dict)
    actual_info: dict = field(default_factory=dict)
    values_compared: bool = False
    #: names whose tensor holds no data on either side (a meta tensor was saved): never equal
    dataless: list[str] = field(default_factory=list)
    #: tolerances the values were compared with (0, 0: exactly)
    atol: float = 0.0
    rtol: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.missing or self.unexpected or self.shape or self.dtype
            or self.values or self.ties or (self.config_strict and self.config) or self.dataless
        )

    def __bool__(self) -> bool:  # a diff is "truthy" when there is a difference
        return not self.ok
