"""One run of a ``lightning.Trainer`` under the resume check (imports lightning: reached only from
``pc.check_resume_lightning``).

Lightning runs its own ``fit()``; the check adds two callbacks:

- Lightning's own ``ModelCheckpoint(every_n_train_steps=at)`` per resume point, which writes the
  checkpoint through ``trainer.save_checkpoint`` as any ModelCheckpoint does;
- a probe that records each batch (``on_train_batch_start``) and its loss (``on_train_batch_end``), and
  stops the run at the first batch of each optimizer step: after ``fit(ckpt_path=...)`` has restored
  the module, optimizers, schedulers, loops and callbacks, and after the batch was fetched.
"""

from __future__ import annotations

import types
import warnings
from pathlib import Path
from typing import Any

import lightning
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from ...resume.capture import digest
from .stepped import Session

#: where the check's own ModelCheckpoint writes, under the trainer's default_root_dir
SAVES = "pytest-ckpt-saves"
#: Lightning's callbacks whose state_dict is bookkeeping, not training state: the paths of the files
#: written, the time elapsed
BOOKKEEPING = ("ModelCheckpoint", "Timer")

class _Probe(Callback):
    def __init__(self, session: "LightningSession") -> None:
        self.session = session
        self.paused_at: int | None = None
        self.batch: str | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.paused_at != trainer.global_step:  # the first micro-batch of an optimizer step
            self.paused_at = trainer.global_step
            self.session.driver.pause()
        self.batch = digest(batch)
        self.session.watch(begin=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.session.watch(begin=False)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.session.record(self.batch, float(loss.detach().float().sum()) if loss is not None else float("nan"))


class LightningSession(Session):
    trainer_name = "lightning.Trainer"

    def __init__(self, module: Any, trainer: Any, data: Any, save_at: tuple[int, ...]) -> None:
        super().__init__(f"Trainer.fit in {trainer.default_root_dir}")
        self.module, self.trainer, self.data = module, trainer, data
        self.saves = [ModelCheckpoint(dirpath=Path(trainer.default_root_dir) / SAVES, every_n_train_steps=at,
                                      save_top_k=-1) for at in save_at]
        trainer.callbacks.extend([*self.saves, _Probe(self)])

    def _fit(self, ckpt_path: str | None) -> Any:
        data = ({"datamodule": self.data} if isinstance(self.data, lightning.LightningDataModule)
                else {"train_dataloaders": self.data})
        with warnings.catch_warnings():
            # the check's own ModelCheckpoint writes under each run's own root
            warnings.filterwarnings("ignore", message=f"The dirpath has changed from .*{SAVES}")
            return self.trainer.fit(self.module, ckpt_path=ckpt_path, **data)

    def train(self) -> Any:
        return self._fit(None)

    def resume(self, checkpoint: Path) -> Any:
        return self._fit(str(checkpoint))

    def checkpoint(self) -> Path:
        step = self.trainer.global_step
        found = sorted((Path(self.trainer.default_root_dir) / SAVES).glob(f"*step={step}.ckpt"))
        if not found:
            raise FileNotFoundError(f"ModelCheckpoint(every_n_train_steps={step}) wrote no checkpoint after step "
                                    f"{step} (in {Path(self.trainer.default_root_dir) / SAVES})")
        return found[-1]

    def view(self) -> dict[str, Any]:
        t = self.trainer
        parts: dict[str, Any] = {"optimizers": list(t.optimizers)}
        schedulers = [c.scheduler for c in t.lr_scheduler_configs]
        if schedulers:
            parts["lr_schedulers"] = schedulers
        scaler = getattr(t.precision_plugin, "scaler", None)
        if scaler is not None:
            parts["scaler"] = scaler
        parts["global_step"], parts["current_epoch"] = t.global_step, t.current_epoch
        parts["fit_loop"] = LoopProgress(t.fit_loop.state_dict())
        callbacks = {}
        for cb in t.callbacks:
            name = type(cb).__name__
            if isinstance(cb, (_Probe, ModelCheckpoint)) or not _stateful(cb):
                continue
            callbacks[name if name not in callbacks else f"{name}_{len(callbacks)}"] = _state_of(cb)
        if callbacks:
            parts["callbacks"] = types.SimpleNamespace(**callbacks)
        return {"module": self.module, "trainer": types.SimpleNamespace(**parts)}


class LoopProgress:
    """The fit loop's progress: epochs, batches and optimizer steps done (``fit_loop.state_dict()``, less
    the ``ready``/``started`` counts, which record the hooks called: a run resumed at an epoch end has
    called one epoch-start hook fewer, by Lightning's design, and trains the same)."""

    def __init__(self, state: dict) -> None:
        self._state = _done(state)

    def state_dict(self) -> dict:
        return self._state


def _done(state: Any) -> Any:
    if not isinstance(state, dict):
        return state
    kept = {k: _done(v) for k, v in state.items() if k not in ("ready", "started")}
    return {k: v for k, v in kept.items() if v != {}}


def _stateful(cb: Callback) -> bool:
    """A callback whose state is training state: the user's own, or one of Lightning's with a state_dict
    (EarlyStopping, StochasticWeightAveraging), less the bookkeeping. Progress bars and summaries hold none."""
    if not type(cb).__module__.startswith(("lightning.", "pytorch_lightning.")):
        return True
    return _own_state_dict(cb) and not any(t.__name__ in BOOKKEEPING for t in type(cb).__mro__)


def _state_of(cb: Callback) -> Any:
    """A callback as state: itself when it has its own ``state_dict`` (what Lightning saves), else what its
    attributes hold (Callback's ``state_dict`` is ``{}``: an EMA kept in attributes is not saved)."""
    return cb if _own_state_dict(cb) else types.SimpleNamespace(**vars(cb))


def _own_state_dict(cb: Callback) -> bool:
    return type(cb).state_dict is not Callback.state_dict

