"""What the ``ckpt`` fixture's checks in one variation share, round trips and resume checks alike:
the variation's name, the test's directory, the settings a variation needs, a directory per check,
and the record the collector reads (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .options import DEFAULT_FSDP_TIMEOUT


class VariationChecks:
    """One variation's checks within one test; ``variation`` is its name (``"plain"``, ...)."""

    def __init__(
        self,
        variation: str,
        *,
        directory: Path,
        compile_backend: str = "eager",
        fsdp_timeout: float = DEFAULT_FSDP_TIMEOUT,
        process_group: Callable[[], None] = lambda: None,
        record: Callable[[dict], None] | None = None,
    ) -> None:
        self.variation = variation
        self._directory = Path(directory)
        self._compile_backend = compile_backend
        self._fsdp_timeout = fsdp_timeout
        self._process_group = process_group
        self._record = record
        self._count = 0

    def _next_directory(self, label: str) -> Path:
        """``<label>``, then ``<label>-2``, ...: one directory per check of the test (not created).

        >>> checks = VariationChecks("plain", directory=Path("d"))
        >>> [checks._next_directory("ckpt-plain").name for _ in range(2)]
        ['ckpt-plain', 'ckpt-plain-2']
        """
        self._count += 1
        return self._directory / (label if self._count == 1 else f"{label}-{self._count}")

    def _log(self, **entry: Any) -> None:
        if self._record is not None:
            self._record({"variation": self.variation, **entry})


def as_dict(report: Any) -> dict | None:
    """``report.to_dict()`` for the record, or ``None``: the record is a courtesy, never a test failure."""
    try:
        return report.to_dict()
    except Exception:  # noqa: BLE001 - the record is a courtesy; never fail a test over it
        return None
