"""One run of a ``transformers.Trainer`` under the resume check (imports transformers: reached only
from ``pc.check_resume_hf``).

The Trainer runs its own ``train()``; the check adds its callbacks and wraps the instance's
``training_step`` (the computation is the Trainer's own, unchanged):

- :class:`SaveAfter` asks for the Trainer's own checkpoint after step ``at`` (``control.should_save``
  in ``on_step_end``, as ``save_steps`` does), so ``_save_checkpoint`` writes ``checkpoint-<at>`` with
  the user's own arguments (``save_only_model``, ``save_safetensors``, ...);
- :func:`record_steps`: ``training_step`` records each micro-batch (a digest of its inputs) and its loss, and the run stops
  right before the first micro-batch of each optimizer step: after every ``on_step_begin`` callback,
  after the Trainer's restore (weights, optimizer, scheduler, scaler, ``trainer_state.json``,
  callbacks' states, RNG) and after ``skip_first_batches``.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Callable

import transformers
from transformers.trainer_callback import ExportableState, TrainerCallback

from ...resume.capture import digest
from .stepped import Session, copy_tree

#: the TrainerState fields that carry the run's progress (the others are set from the arguments, or are
#: records: log_history, the paths of saved checkpoints)
PROGRESS = ("global_step", "epoch", "num_input_tokens_seen", "total_flos", "best_metric", "best_global_step",
            "train_batch_size")
#: the TrainerControl flags that outlive a step (on_step_begin resets the others)
CONTROL = ("should_training_stop", "should_epoch_stop")


class SaveAfter(TrainerCallback):
    """Asks for the Trainer's own checkpoint after the steps in ``steps`` (``control.should_save`` in
    ``on_step_end``, as ``save_steps`` does)."""

    def __init__(self, steps: tuple[int, ...]) -> None:
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            control.should_save = True


class _StepBegins(TrainerCallback):
    def __init__(self) -> None:
        self.begins = False

    def on_step_begin(self, args, state, control, **kwargs):
        self.begins = True


def record_steps(trainer: transformers.Trainer, first: Callable[[], None], record: Callable[[str, float], None]) -> None:
    """Wrap the instance's ``training_step`` (the user's override, if any): ``first()`` runs right before
    the first micro-batch of each optimizer step (the state is complete there: callbacks, restore and
    data skip done), ``record(batch digest, loss)`` after each micro-batch."""
    begins = _StepBegins()
    trainer.add_callback(begins)
    training_step = trainer.training_step

    def recorded(*args: Any, **kwargs: Any) -> Any:
        if begins.begins:
            begins.begins = False
            first()
        inputs = args[1] if len(args) > 1 else kwargs["inputs"]
        batch = digest(inputs)  # before the step: compute_loss may pop "labels"
        loss = training_step(*args, **kwargs)
        record(batch, float(loss.detach().float().sum()))
        return loss

    trainer.training_step = recorded


class _Watch(TrainerCallback):
    """Marks where each optimizer step's computation ends (after the optimizer and scheduler steps)."""

    def __init__(self, session: "HFSession") -> None:
        self.session = session

    def on_step_end(self, args, state, control, **kwargs):
        self.session.watch(begin=False)


class HFSession(Session):
    trainer_name = "transformers.Trainer"

    def __init__(self, trainer: transformers.Trainer, save_at: tuple[int, ...]) -> None:
        super().__init__(f"Trainer.train in {trainer.args.output_dir}")
        self.trainer, self.save_at = trainer, save_at
        trainer.add_callback(_Watch(self))
        trainer.add_callback(SaveAfter(save_at))
        record_steps(trainer, self._first_micro_batch, self.record)

    def _first_micro_batch(self) -> None:
        self.driver.pause()
        self.watch(begin=True)

    def train(self) -> Any:
        return self.trainer.train()

    def resume(self, checkpoint: Path) -> Any:
        return self.trainer.train(resume_from_checkpoint=str(checkpoint))

    def checkpoint(self) -> Path:
        path = Path(self.trainer.args.output_dir) / f"checkpoint-{self.trainer.state.global_step}"
        if not path.is_dir():
            raise FileNotFoundError(f"the Trainer wrote no {path.name} after step {self.trainer.state.global_step} "
                                    f"(in {path.parent})")
        return path

    def place(self, checkpoint: Path) -> Path:
        # as the run that stopped: its output_dir holds the checkpoint-N it resumes from
        target = Path(self.trainer.args.output_dir) / checkpoint.name
        copy_tree(checkpoint, target)
        return target

    def view(self) -> dict[str, Any]:
        t = self.trainer
        parts: dict[str, Any] = {"model": t.model}
        if t.optimizer is not None:  # created by train(); accelerate wraps it
            parts["optimizer"] = getattr(t.optimizer, "optimizer", t.optimizer)
        if t.lr_scheduler is not None:
            parts["lr_scheduler"] = getattr(t.lr_scheduler, "scheduler", t.lr_scheduler)
        scaler = getattr(t.accelerator, "scaler", None)
        if scaler is not None:
            parts["scaler"] = scaler
        parts["state"] = types.SimpleNamespace(**{name: getattr(t.state, name) for name in PROGRESS
                                                  if hasattr(t.state, name)})  # older versions have fewer
        parts["control"] = types.SimpleNamespace(**{name: getattr(t.control, name) for name in CONTROL})
        callbacks = {}
        for cb in t.callback_handler.callbacks:
            name = type(cb).__name__
            if isinstance(cb, (_Watch, SaveAfter, _StepBegins)) or not _stateful(cb):
                continue
            callbacks[name if name not in callbacks else f"{name}_{len(callbacks)}"] = cb
        if callbacks:
            parts["callbacks"] = types.SimpleNamespace(**callbacks)
        return {"trainer": types.SimpleNamespace(**parts)}


def _stateful(cb: TrainerCallback) -> bool:
    """A callback whose state is training state: one the Trainer checkpoints (an ExportableState), or the
    user's own. transformers' other callbacks print, report to trackers or set the flow's flags."""
    return isinstance(cb, ExportableState) or not type(cb).__module__.startswith("transformers.")
