"""The ``ckpt_snapshot`` fixture object: one golden schema file per test (and name)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable


class SnapshotMismatch(AssertionError):
    """The schema differs from the golden snapshot, or there is none yet. The message is the report."""

    def __init__(self, message: str, diff: Any = None) -> None:
        super().__init__(message)
        self.diff = diff


_UNSAFE = re.compile(r"[^A-Za-z0-9._\-\[\]+=,]")


def snapshot_path(test_file: Path, snapshot_dir: str, test_name: str, name: str | None) -> Path:
    """``<test dir>/<snapshot_dir>/<module>/<test>[.<name>].json``; an absolute ``snapshot_dir`` is used as is."""
    root = Path(snapshot_dir)
    if not root.is_absolute():
        root = test_file.parent / root
    stem = _UNSAFE.sub("_", test_name) + (f".{_UNSAFE.sub('_', name)}" if name else "")
    return root / test_file.stem / f"{stem}.json"


class CkptSnapshot:
    """Compare a model's, state dict's or checkpoint's schema with its golden file.

    >>> def test_architecture(ckpt_snapshot):              # doctest: +SKIP
    ...     ckpt_snapshot.assert_match(build_model(Config()))
    ...     ckpt_snapshot.assert_match("fixtures/v1.pt", name="v1")
    """

    def __init__(self, *, test_file: Path, test_name: str, snapshot_dir: str, update: bool,
                 record: Callable[[dict], None]) -> None:
        self._test_file = test_file
        self._test_name = test_name
        self._snapshot_dir = snapshot_dir
        self.update = update
        self._record = record
        self._seen: set[Path] = set()

    def path(self, name: str | None = None) -> Path:
        return snapshot_path(self._test_file, self._snapshot_dir, self._test_name, name)

    def assert_match(self, source: Any, name: str | None = None, *, config: Any = None) -> None:
        """Fail with the report unless ``source``'s schema equals the golden file (``--ckpt-update`` writes it)."""
        __tracebackhide__ = True
        from . import snapshot

        path = self.path(name)
        if path in self._seen:
            raise ValueError(f"{path.name} was already checked in this test: give each "
                             "assert_match call its own name=")
        self._seen.add(path)
        started = time.perf_counter()
        result = snapshot.check(source, path, update=self.update, config=config)
        diff = result.diff.to_dict() if result.diff is not None and not result.diff.ok else None
        self._record({"path": str(path.resolve()), "outcome": result.outcome, "diff": diff,
                      "message": result.message, "duration": time.perf_counter() - started})
        if result.outcome in ("missing", "differs"):
            raise SnapshotMismatch(result.message, result.diff)
