"""The resume check's causes in Lightning's words: what its checkpoint holds, and what it does not.

Lightning's checkpoint holds the module, optimizers, LR schedulers, loops' progress and each
callback's ``state_dict()``; not the global random streams, and not the position of a plain
``DataLoader`` inside an epoch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...checkpoint.notes import Note
from ...resume.report import ResumePoint, ResumeReport
from ...resume.streams import SAVE_RESTORE
from .check import about, is_stream, reword

CALLBACKS = "run.trainer.callbacks."


def facts(trainer: Any, data: Any) -> dict:
    """What the fixes read from a run's trainer and data: the optimizer steps in an epoch (``None`` when
    the data is a LightningDataModule, whose loader exists only once fitting), whether the loader keeps
    its position (a ``state_dict()``), the callbacks by name."""
    import torch

    per_epoch, stateful = None, False
    if isinstance(data, torch.utils.data.DataLoader):
        stateful = callable(getattr(data, "state_dict", None)) and callable(getattr(data, "load_state_dict", None))
        try:
            per_epoch = math.ceil(len(data) / max(int(trainer.accumulate_grad_batches), 1))
        except TypeError:  # an IterableDataset without a length
            per_epoch = None
    return {"per_epoch": per_epoch, "stateful": stateful, "callbacks": [type(cb).__name__ for cb in trainer.callbacks]}


def explain(report: ResumeReport, saved: dict[int, Path], facts: dict) -> None:
    per_epoch = facts["per_epoch"]

    def rule(point: ResumePoint, note: Note) -> tuple[str | None, int]:
        mid_epoch = per_epoch is not None and point.at % per_epoch != 0
        if is_stream(note):
            return (f"Lightning's checkpoint holds no global RNG: add a Callback whose state_dict() returns "
                    f"{{'{note.names[0]}': {SAVE_RESTORE[note.names[0]][0]}}} and whose load_state_dict() sets "
                    f"it back ({SAVE_RESTORE[note.names[0]][1]}); Lightning restores it with the checkpoint, before the next "
                    f"epoch's loader shuffles" + (" (at an epoch end: mid-epoch, the data needs a stateful "
                                                  "loader too)" if mid_epoch else "")), 1
        if note.kind == "resume-data" and mid_epoch and not facts["stateful"]:
            return (f"the checkpoint after step {point.at} is mid-epoch (step {point.at % per_epoch} of "
                    f"{per_epoch} in its epoch) and a plain DataLoader starts the epoch over on resume: use a "
                    f"stateful loader (torchdata's StatefulDataLoader, whose state_dict() Lightning saves and "
                    f"restores) or save at epoch ends (ModelCheckpoint(every_n_train_steps={per_epoch}) or "
                    f"every_n_epochs=1)"), 0
        for name in facts["callbacks"]:
            if about(note, CALLBACKS + name):
                return (f"Lightning saves a callback's state_dict() (Callback's own is empty): give {name} a "
                        f"state_dict() that returns this state and a load_state_dict() that sets it back"), 1
        return None, 1

    reword(report, rule)

