"""The trainer detection cases: the test suite's tiny transformers.Trainer and Lightning run
(``tests/checks/trainers/hf_runs.py``, ``lightning_runs.py``), correct and with the resume bugs of issue
24, each with the two resume points it is measured at.

Imports neither pytest-ckpt nor a peer: the peers' venv runs these too (``chaos_target.py``).
A case is positive at a point when the resumed run differs from the uninterrupted one there (its losses,
its final weights, or a callback's state), which :func:`reference` decides by running both.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]

#: 16 rows, 4 a batch: 4 optimizer steps an epoch
ROWS, BATCH = 16, 4
HF_STEPS, LIGHTNING_STEPS = 8, 12


@dataclass(frozen=True)
class Case:
    name: str
    framework: str  # "hf" or "lightning"
    points: tuple[int, ...]
    #: the note kinds whose first note is the right cause, when the case is positive
    kinds: frozenset[str] = frozenset()
    #: a path the right first note is about (a callback), when it must be that one
    about: str = ""
    options: dict = field(default_factory=dict)
    what: str = ""


CASES = [
    Case("correct", "hf", (3, 4), what="HF Trainer, correct (mid-epoch, epoch end)"),
    Case("save_only_model", "hf", (3, 4), frozenset({"resume-optimizer"}), options={"save_only_model": True},
         what="HF `save_only_model=True`"),
    Case("ignore_data_skip", "hf", (3, 4), frozenset({"resume-data"}), options={"ignore_data_skip": True},
         what="HF `ignore_data_skip=True`"),
    Case("callback", "hf", (3, 4), frozenset({"resume-weights", "resume-counter", "resume-state"}),
         "run.trainer.callbacks.EMA", {"callback": True}, what="HF callback with unsaved state (EMA)"),
    Case("grad_accum", "hf", (3, 4), options={"gradient_accumulation_steps": 2, "per_device_train_batch_size": 2},
         what="HF gradient accumulation 2 across the resume point"),
    Case("correct", "lightning", (4, 8), what="Lightning, correct, deterministic, epoch ends"),
    Case("mid_epoch", "lightning", (2, 6), frozenset({"resume-data"}), what="Lightning mid-epoch (plain DataLoader)"),
    Case("dropout_shuffle", "lightning", (4, 8), frozenset({"resume-rng"}), options={"dropout": 0.2, "shuffle": True},
         what="Lightning dropout + shuffle, epoch ends"),
    Case("ema", "lightning", (4, 8), frozenset({"resume-weights", "resume-state", "resume-counter"}),
         "run.trainer.callbacks.EMA", {"callback": True}, what="Lightning EMA callback without state_dict"),
]


def case(framework: str, name: str) -> Case:
    return next(c for c in CASES if c.framework == framework and c.name == name)


# -- the runs: the test suite's tiny Trainer and Lightning run (tests/checks/trainers/) -------------------

def _runs(framework: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if framework == "hf":
        from tests.checks.trainers import hf_runs

        return hf_runs
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*(does not have many workers|resuming from a checkpoint that ended|"
                                      "LeafSpec|dirpath has changed|callbacks used to create the checkpoint).*")
    from tests.checks.trainers import lightning_runs

    return lightning_runs


@functools.cache
def _save_at():
    import transformers

    class SaveAt(transformers.TrainerCallback):
        """The Trainer's own save after the given steps, as ``save_steps`` would."""

        def __init__(self, steps) -> None:
            self.steps = steps

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in self.steps:
                control.should_save = True

    return SaveAt


def hf_trainer(c: Case, output_dir: str, save_at: tuple[int, ...] = ()):
    runs = _runs("hf")
    options = {k: v for k, v in c.options.items() if k != "callback"}
    trainer = runs.make_trainer(output_dir, callbacks=[runs.EMA] if c.options.get("callback") else [],
                                max_steps=HF_STEPS, **options)
    if save_at:
        trainer.add_callback(_save_at()(save_at))
    return trainer


def hf_losses(trainer) -> list[float]:
    """The loss of every micro-batch the trainer trains from now on."""
    losses: list[float] = []
    step = trainer.training_step

    def recorded(*args, **kwargs):
        loss = step(*args, **kwargs)
        losses.append(float(loss.detach()))
        return loss

    trainer.training_step = recorded
    return losses


def lightning_module(c: Case):
    return _runs("lightning").Net(c.options.get("dropout", 0.0))


def lightning_trainer(c: Case, root: str, callbacks=()):
    runs = _runs("lightning")
    trainer = runs.make_trainer(root, callbacks=[runs.EMA] if c.options.get("callback") else [],
                                max_steps=LIGHTNING_STEPS)  # a ModelCheckpoint given is the only one
    trainer.callbacks.extend(callbacks)
    return trainer


def lightning_data(c: Case):
    return _runs("lightning").loader(shuffle=c.options.get("shuffle", False))


def lightning_losses(trainer) -> list[float]:
    import lightning as L

    losses: list[float] = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"].detach()))

    trainer.callbacks.append(Losses())
    return losses


# -- ground truth ---------------------------------------------------------------------------------------

def reference(c: Case, at: int, workdir: Path) -> tuple[bool, str]:
    """Whether resuming after step ``at`` changes the run (``True``: positive), and where it shows: the
    uninterrupted run saving after ``at``, and a fresh run resumed from that checkpoint by the framework."""
    torch.manual_seed(0)
    if c.framework == "hf":
        first = hf_trainer(c, str(workdir / "a"), save_at=(at,))
        lost = hf_losses(first)
        first.train()
        torch.manual_seed(1)
        second = hf_trainer(c, str(workdir / "b"))
        got = hf_losses(second)
        second.train(resume_from_checkpoint=str(workdir / "a" / f"checkpoint-{at}"))
        models, callbacks = (first.model, second.model), [
            [cb for cb in t.callback_handler.callbacks if type(cb).__name__ == "EMA"] for t in (first, second)]
    else:
        from lightning.pytorch.callbacks import ModelCheckpoint

        saves = ModelCheckpoint(dirpath=workdir / "saves", every_n_train_steps=at, save_top_k=-1)
        first_module = lightning_module(c)
        first = lightning_trainer(c, str(workdir / "a"), callbacks=[saves])
        lost = lightning_losses(first)
        first.fit(first_module, lightning_data(c))
        torch.manual_seed(1)
        second_module = lightning_module(c)
        second = lightning_trainer(c, str(workdir / "b"))
        got = lightning_losses(second)
        (checkpoint,) = (workdir / "saves").glob(f"*step={at}.ckpt")
        second.fit(second_module, lightning_data(c), ckpt_path=str(checkpoint))
        models = (first_module, second_module)
        callbacks = [[cb for cb in t.callbacks if type(cb).__name__ == "EMA"] for t in (first, second)]
    per_step = len(lost) // (HF_STEPS if c.framework == "hf" else LIGHTNING_STEPS)
    if lost[at * per_step:] != got:
        step = next(i for i, (a, b) in enumerate(zip(lost[at * per_step:], got)) if a != b) // per_step + at + 1
        return True, f"loss at step {step}"
    a, b = (m.state_dict() for m in models)
    if any(not torch.equal(a[k], b[k]) for k in a):
        return True, "final weights"
    for x, y in zip(*callbacks):
        if any(not torch.equal(x.shadow[k], y.shadow[k]) for k in x.shadow):
            return True, "the EMA callback's state"
    return False, "-"


def run(c: Case) -> dict[str, Any]:
    """``(make_trainer,)`` or ``(make_module, make_trainer, make_data)`` for pytest-ckpt's check."""
    if c.framework == "hf":
        return {"make_trainer": lambda output_dir: hf_trainer(c, output_dir)}
    return {"make_module": lambda: lightning_module(c), "make_trainer": lambda root: lightning_trainer(c, root),
            "make_data": lambda: lightning_data(c)}
