"""What the ``interrupted`` variation found: one outcome per kill, the counts per class, the report.

The classes are ckpt-chaos's, judged on the checkpoint the project's own load returns:

- ``pass``: the load returned the previous checkpoint or the new one, exactly;
- ``hard fail``: the load raised (the kill destroyed the previous checkpoint: training cannot
  resume, however clear the error), or the next save to the path raised;
- ``silent divergence``: the load returned a model mixing the two checkpoints, or holding tensors
  of neither beside them;
- ``lost work``: the load returned a model with no tensor of either checkpoint (a fresh start).

>>> from pytest_ckpt.processes.boundaries import Boundary
>>> b = Boundary("torn", "write", ("/r/model.pt",))
>>> o = Outcome(b.describe("/r"), HARD_FAIL, "your load raised CheckpointError: truncated", torn=True)
>>> r = InterruptedReport("save", "load", [o], files=("model.pt",))
>>> print(r)  # doctest: +NORMALIZE_WHITESPACE
ckpt-interrupted round trip (saved with save, loaded with load): 1 of 1 kill breaks your checkpoint
  outcomes: 0 pass, 1 hard fail, 0 silent divergence, 0 lost work (1 file boundary of your save)
  [hard fail] torn model.pt at 50%: your load raised CheckpointError: truncated
  fix: save to a temporary name in the same directory, then os.replace it over the path (pc.save(model, path) does both), so a kill leaves the previous checkpoint whole
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

PASS = "pass"
HARD_FAIL = "hard fail"
SILENT = "silent divergence"
LOST = "lost work"
CLASSES = (PASS, HARD_FAIL, SILENT, LOST)
#: failing kills shown one per line; the rest are counted
SHOWN = 12


@dataclass
class Outcome:
    """One kill: where (the boundary, described), its class, and what the load did."""

    where: str
    verdict: str
    detail: str
    #: the kill came after a completed write that was then cut short
    torn: bool = False
    #: the pass's checkpoint: "previous" or "new"
    loaded: str = ""


@dataclass
class InterruptedReport:
    """Every kill of one save; ``str()`` is the report, ``ok`` whether every kill passed."""

    saved_with: str
    loaded_with: str
    outcomes: list[Outcome]
    #: the files the uninterrupted save wrote, relative to its directory
    files: tuple[str, ...] = ()
    #: kills that did not happen as planned (the save's boundaries changed between runs): not counted
    not_run: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: the previous checkpoint's files the save writes over at their own names (a save_pretrained into
    #: the same directory): a kill leaves new and old files side by side, each whole
    in_place: tuple[str, ...] = ()
    #: what the report's first line calls the check
    check: str = "ckpt-interrupted round trip"
    #: the fix, when the caller knows it better than :func:`fix` (a Trainer's resume)
    advice: str = ""

    @property
    def ok(self) -> bool:
        return all(o.verdict == PASS for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        return {c: sum(o.verdict == c for o in self.outcomes) for c in CLASSES}

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict != PASS]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "saved_with": self.saved_with, "loaded_with": self.loaded_with,
                "counts": self.counts(), "files": list(self.files), "not_run": self.not_run,
                "in_place": list(self.in_place), "seconds": round(self.seconds, 3),
                "outcomes": [asdict(o) for o in self.outcomes]}

    def __str__(self) -> str:
        n, bad = len(self.outcomes), self.failures()
        head = f"{self.check} (saved with {self.saved_with}, loaded with {self.loaded_with})"
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        boundaries = f"{n} file boundar{'y' if n == 1 else 'ies'} of your save"
        if not bad:
            new = sum(o.loaded == "new" for o in self.outcomes)
            lines = [f"{head}: every kill passes: {n - new} load the previous checkpoint, {new} the new one",
                     f"  outcomes: {counts} ({boundaries})"]
        else:
            lines = [f"{head}: {len(bad)} of {n} kill{'' if n == 1 else 's'} "
                     f"break{'s' if len(bad) == 1 else ''} your checkpoint",
                     f"  outcomes: {counts} ({boundaries})"]
            lines += [f"  [{o.verdict}] {o.where}: {o.detail}" for o in bad[:SHOWN]]
            if len(bad) > SHOWN:
                lines.append(f"  ... and {len(bad) - SHOWN} more kills that break it")
            lines.append(f"  fix: {self.advice or fix(bad, self.files, self.in_place)}")
        if self.not_run:
            lines.append(f"  not run (your save's boundaries changed between runs): {'; '.join(self.not_run[:3])}")
        return "\n".join(lines)


def written_in_place(boundaries: Iterable, checkpoint: Path, previous: Path) -> tuple[str, ...]:
    """The files of the previous checkpoint (``previous``: its path, a file or a directory) that the
    save's ``boundaries`` write over at their own names in ``checkpoint``, relative to its directory.
    A single file is never listed: over one file, an atomic replace is a whole answer.

    >>> import tempfile
    >>> from pytest_ckpt.processes.boundaries import Boundary
    >>> old, new = Path(tempfile.mkdtemp()) / "ckpt", Path(tempfile.mkdtemp()) / "ckpt"
    >>> old.mkdir(); new.mkdir(); (old / "model-1.safetensors").touch()
    >>> written_in_place([Boundary("before", "safetensors.torch.save_file", (str(new / "model-1.safetensors"),)),
    ...                   Boundary("before", "open", (str(new / "model.safetensors.index.json"),))], new, old)
    ('model-1.safetensors',)
    """
    if not (checkpoint.is_dir() and previous.is_dir()):
        return ()
    over = []
    for b in boundaries:
        if b.kind != "before" or b.op not in WRITERS:
            continue
        rel = os.path.relpath(b.paths[0], checkpoint)
        if not rel.startswith("..") and (previous / rel).is_file() and rel not in over:
            over.append(rel)
    return tuple(over)


#: the boundary ops that write a file at the path they name
WRITERS = ("open", "os.open", "torch.save", "safetensors.torch.save_file")


def fix(bad: list[Outcome], files: tuple[str, ...], in_place: tuple[str, ...] = ()) -> str:
    """The one change that makes every failing kill pass, on the side that must change."""
    if bad and all(o.verdict == LOST for o in bad):
        return ("let your load raise, or fall back to the newest complete checkpoint "
                "(pc.latest_complete(directory)), instead of returning a model of neither checkpoint")
    if any("next save" in o.detail for o in bad) and all("next save" in o.detail for o in bad):
        return "make your save overwrite whatever a killed save left at the path (stale temporary files included)"
    if len(files) > 1 and in_place:  # each file whole, the set mixed: nothing read on load can tell
        return (f"your save writes the checkpoint's files over the previous one's in place ({_listed(in_place)}): "
                "a kill leaves new and old files side by side, each whole, which no check on load (pc.verify "
                "included) can tell from one checkpoint; save each checkpoint to its own directory and resume "
                "from pc.latest_complete(directory), or write into a staging directory and rename it into place")
    if len(files) > 1:
        return ("a checkpoint of several files: write them into a new directory and rename it into "
                "place, or save each checkpoint to its own directory and resume from "
                "pc.latest_complete(directory); write the index last, and verify it on load (pc.verify)")
    return ("save to a temporary name in the same directory, then os.replace it over the path "
            "(pc.save(model, path) does both), so a kill leaves the previous checkpoint whole")


def _listed(names: tuple[str, ...], show: int = 2) -> str:
    head = ", ".join(names[:show])
    return head if len(names) <= show else f"{head} and {len(names) - show} more"
