"""The resume check's causes in the Trainer's words: which ``TrainingArguments`` or callback did it.

Each fix follows from what the run shows: the note's component, the arguments the Trainer ran with and
the files its ``checkpoint-<at>`` holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...checkpoint.notes import Note
from ...resume.report import ResumePoint, ResumeReport
from .check import about, is_stream, reword

#: what the Trainer writes beside the weights unless save_only_model=True, by the note kind it explains:
#: (glob, file name, what a resume without it starts from)
TRAINING_FILES = {"resume-optimizer": ("optimizer.*", "optimizer.pt", "a fresh optimizer"),
                  "resume-scheduler": ("scheduler.pt", "scheduler.pt", "the schedule's first step"),
                  "resume-scaler": ("scaler.pt", "scaler.pt", "a fresh gradient scaler"),
                  "resume-rng": ("rng_state*.pth", "rng_state.pth", "the RNG as the Trainer seeded it")}
CALLBACKS = "run.trainer.callbacks."


def facts(trainer: Any) -> dict:
    """What the fixes read from a Trainer built by ``make_trainer``: its arguments and its callbacks."""
    from transformers.trainer_callback import ExportableState

    return {"args": trainer.args,
            "exportable": {type(cb).__name__: isinstance(cb, ExportableState) for cb in trainer.callback_handler.callbacks}}


def explain(report: ResumeReport, saved: dict[int, Path], facts: dict) -> None:
    args = facts["args"]

    def rule(point: ResumePoint, note: Note) -> tuple[str | None, int]:
        checkpoint = saved.get(point.at)
        if getattr(args, "save_only_model", False) and checkpoint is not None and note.kind in TRAINING_FILES:
            pattern, name, fresh = TRAINING_FILES[note.kind]
            if not any(checkpoint.glob(pattern)):
                return (f"save_only_model=True leaves {name} out of {checkpoint.name}, and the Trainer resumes from "
                        f"{fresh} without a warning: train with save_only_model=False to write checkpoints you "
                        f"resume from (True suits checkpoints you never resume)"), 1
        if args.ignore_data_skip and note.kind == "resume-data":
            return ("ignore_data_skip=True makes the resumed Trainer start the epoch's data over, so it trains "
                    "again on batches it trained before the checkpoint: leave ignore_data_skip=False (the "
                    "default), and the Trainer skips the batches already done"), 0
        if args.ignore_data_skip and is_stream(note) and note.names[0] == "torch":
            return ("it follows from ignore_data_skip=True: the Trainer restores the RNG when the epoch starts "
                    "over, and the restarted DataLoader's iterator then draws its seed from torch's global RNG; "
                    "leave ignore_data_skip=False"), 1
        for name, exportable in facts["exportable"].items():
            if about(note, CALLBACKS + name):
                return _callback_fix(name, exportable, args), 1
        return None, 1

    reword(report, rule)


def _callback_fix(name: str, exportable: bool, args: Any) -> str:
    if exportable and not getattr(args, "restore_callback_states_from_checkpoint", False):
        return (f"{name} is an ExportableState and trainer_state.json holds its state(), but the Trainer "
                f"restores callbacks only when asked: TrainingArguments(restore_callback_states_from_checkpoint=True)")
    if exportable:
        return (f"{name}.state() does not carry this: return it among the 'attributes' of state() (the Trainer "
                f"sets them back on resume; JSON values only)")
    return (f"the Trainer saves a callback's state only when it is an ExportableState: make {name} one "
            f"(transformers.trainer_callback.ExportableState, its state() returns args and attributes, kept "
            f"in trainer_state.json) and train with restore_callback_states_from_checkpoint=True; tensors (an "
            f"EMA's weights) do not fit in JSON: write them into the checkpoint folder in {name}.on_save and "
            f"read them back in on_train_begin")

