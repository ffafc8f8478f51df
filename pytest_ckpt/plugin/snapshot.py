"""The ``ckpt_snapshot`` fixture: one golden schema file per test (and name), compared with
``pc.diff`` and written atomically by ``pc.save_schema`` under ``--ckpt-update``."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

UPDATE_HINT = "run pytest --ckpt-update if this change is intended"
#: the fix of every cause found against a snapshot (the rules' own fixes speak of checkpoints)
SNAPSHOT_FIX = f"{UPDATE_HINT}; if not, undo this change to the model"


@dataclass
class SnapshotResult:
    """The outcome of one ``assert_match``: written, matched, or the diff that failed."""

    path: Path
    outcome: str  # "match" | "written" | "missing" | "differs"
    diff: Any = None
    message: str = ""


class SnapshotWarning(UserWarning):
    """A snapshot check that works but may not pin what the test means (several models in a file)."""


def check(source: Any, path: Path, *, update: bool, config: Any = None, like: Any = None) -> SnapshotResult:
    """Compare ``source``'s schema with the golden file at ``path``; write it only when ``update``.

    ``like``: when ``source`` is a file holding several models (a training state), the
    one to pin (a model, a checkpoint or a schema snapshot shaped like it).
    """
    from .. import api

    places = _places(source) if like is None else []
    pinned = _places(path) if places and path.exists() else []
    if len(pinned) > 1 or (len(places) > 1 and (update or not path.exists())):
        return _check_each_model(source, places, path, update=update, config=config)
    if len(places) > 1:  # a snapshot written before each model was pinned: it pins the one read first
        _warn_several_models(source, path)
    if not path.exists():
        if update:
            api.save_schema(source, path, config=config, like=like)
            return SnapshotResult(path, "written")
        return SnapshotResult(path, "missing", message=(
            f"no golden schema snapshot at {path}; {UPDATE_HINT} to create it"))
    result = api.diff(source, path, values=False, configs=(config, None), like=like)
    result.notes = [n if n.info else dataclasses.replace(n, fix=SNAPSHOT_FIX) for n in result.notes]
    if result.ok:
        if update and api.save_schema(source, path, config=config, like=like):
            return SnapshotResult(path, "written")  # same schema, config changed: keep the file current
        return SnapshotResult(path, "match", diff=result)
    if update:
        api.save_schema(source, path, config=config, like=like)
        return SnapshotResult(path, "written", diff=result)
    return SnapshotResult(path, "differs", diff=result, message=(
        f"schema differs from golden snapshot {path}\n{result}"))


def _places(source: Any) -> list[tuple]:
    """Where a file (or a training state's dict) holds something that could be a model; none for a module."""
    if not isinstance(source, (str, os.PathLike, dict)):
        return []
    from ..checkpoint.resolve import model_locations

    return model_locations(source)


def _check_each_model(source: Any, places: list[tuple], path: Path, *, update: bool, config: Any) -> SnapshotResult:
    """A file holding several models (VAR's training state: the trained model beside a frozen VAE)
    against a snapshot that pins each where the file holds it: a change to any of them fails, naming it."""
    from .. import api
    from ..checkpoint.locate import format_path
    from ..checkpoint.resolve import resolve

    if not path.exists():
        if update:
            api.save_schema(source, path, config=config)
            return SnapshotResult(path, "written")
        return SnapshotResult(path, "missing", message=(
            f"no golden schema snapshot at {path}; run pytest --ckpt-update to create it (it pins each of the "
            f"{len(places)} models in the file: {', '.join(format_path(p) for p in places)})"))
    pinned = _places(path)
    found, first = [], None
    for place in [*places, *(p for p in pinned if p not in places)]:
        where = format_path(place)
        if place not in pinned:
            found.append(f"at {where}: a model of {len(resolve(source, values=False, at=place).schema)} "
                         "tensors the snapshot does not pin")
            continue
        if place not in places:
            found.append(f"at {where}: the snapshot pins a model there, the file holds none")
            continue
        result = api.diff(resolve(source, values=False, at=place), resolve(path, values=False, at=place),
                          values=False, configs=(config, None))
        # "at <place>" says where each model is: the notes saying where it was found and what was passed over go
        result.notes = [n if n.info else dataclasses.replace(n, fix=SNAPSHOT_FIX) for n in result.notes
                        if not (n.info and n.kind == "nested")]
        if not result.ok:
            first = first or result
            found.append(f"at {where}: {result}")
    if update:
        wrote = api.save_schema(source, path, config=config)
        if found or wrote:
            return SnapshotResult(path, "written", diff=first)
    if not found:
        return SnapshotResult(path, "match")
    return SnapshotResult(path, "differs", diff=first, message="\n".join(
        [f"schema differs from golden snapshot {path} ({len(found)} of the {len(set(places) | set(pinned))} "
         f"models it pins):", *found, f"  fix: {SNAPSHOT_FIX}" if first is None else ""]).rstrip())


def _warn_several_models(source: Any, path: Path) -> None:
    # the snapshot pins the largest model (VAR: the frozen VAE, not the model being trained), and a
    # change to the others passes: say so where the test runs
    from .. import api

    for note in api.inspect(source).notes:
        if note.kind == "candidates":
            warnings.warn(SnapshotWarning(f"snapshot {path.name}: {note.text}; it pins only the one read: run "
                                          "pytest --ckpt-update to pin each of them"), stacklevel=4)


def stale_snapshots(root: Path, used: set[Path]) -> list[Path]:
    """Snapshot files under ``root`` that no test of this run used."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*.json") if p.resolve() not in used)


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

    def assert_match(self, source: Any, name: str | None = None, *, config: Any = None,
                     like: Any = None) -> None:
        """Fail with the report unless ``source``'s schema equals the golden file (``--ckpt-update`` writes it).

        ``like``: when ``source`` is a file holding several models (a training state), the one
        to pin: a model, a checkpoint or a schema snapshot shaped like it.
        """
        __tracebackhide__ = True
        path = self.path(name)
        if path in self._seen:
            raise ValueError(f"{path.name} was already checked in this test: give each "
                             "assert_match call its own name=")
        self._seen.add(path)
        started = time.perf_counter()
        result = check(source, path, update=self.update, config=config, like=like)
        diff = result.diff.to_dict() if result.diff is not None and not result.diff.ok else None
        self._record({"path": str(path.resolve()), "outcome": result.outcome, "diff": diff,
                      "message": result.message, "duration": time.perf_counter() - started})
        if result.outcome in ("missing", "differs"):
            raise SnapshotMismatch(result.message, result.diff)
