"""A tiny Lightning run (an MLP, AdamW and a step LR schedule; CPU) for the resume checks: with or
without dropout, shuffled or not, and the callbacks that keep or lose state."""

from __future__ import annotations

import logging
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # its tips on workers and loggers

g = torch.Generator().manual_seed(0)
DATA = torch.utils.data.TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g))


class Net(L.LightningModule):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)]


def make_trainer(root: str, callbacks=(), **kwargs) -> L.Trainer:
    """8 steps of 4 batches an epoch: step 4 ends an epoch, step 2 is mid-epoch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return L.Trainer(**{"default_root_dir": root, "max_steps": 8, "accelerator": "cpu", "devices": 1,
                            "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                            "enable_model_summary": False, "callbacks": [c() for c in callbacks], **kwargs})


def loader(shuffle: bool = False) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(DATA, batch_size=4, shuffle=shuffle)


class RNGState(Callback):
    """The fix: the global torch RNG in the checkpoint, set back with it."""

    def state_dict(self):
        return {"torch": torch.get_rng_state()}

    def load_state_dict(self, state_dict):
        torch.set_rng_state(state_dict["torch"])


class EMA(Callback):
    """An exponential moving average of the weights, kept in attributes: Callback.state_dict() is {}."""

    def __init__(self) -> None:
        self.shadow: dict | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        if self.shadow is None:
            self.shadow = weights
        else:
            for k, v in weights.items():
                self.shadow[k].mul_(0.9).add_(v, alpha=0.1)
