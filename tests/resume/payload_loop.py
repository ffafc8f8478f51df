"""A training loop whose save writes a directory, one file of which holds an object whose unpickling
runs ``touch <marker>`` (a real payload; the marker path comes from ``PAYLOAD_MARKER``). Its loads
leave a piece of state alone, so a resume check explains the difference by reading what the save
wrote: the payload must never run."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class Payload:
    """Unpickling it runs ``touch <marker>``: the file appears only if something unpickled it freely."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def start():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    return {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=0.01), "step": 0,
            "data": torch.Generator().manual_seed(0)}


def step(run):
    x = torch.randn(8, 4, generator=run["data"])
    loss = F.mse_loss(run["model"](x), x.sum(dim=1, keepdim=True))
    run["optimizer"].zero_grad()
    loss.backward()
    run["optimizer"].step()
    run["step"] += 1
    return loss.detach(), x


def save(run, path):
    """``model.pt`` (weights, step, data order) and ``optimizer.pt``: the optimizer state beside the payload."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"model": run["model"].state_dict(), "step": run["step"], "data": run["data"].get_state()},
               path / "model.pt")
    torch.save({"opt": run["optimizer"].state_dict(), "extra": Payload(os.environ["PAYLOAD_MARKER"])},
               path / "optimizer.pt")


def load_forgets_optimizer(run, path):
    state = torch.load(Path(path) / "model.pt", weights_only=True)
    run["model"].load_state_dict(state["model"])
    run["step"] = state["step"]
    run["data"].set_state(state["data"])


def save_prefixed(run, path):
    """The weights under DDP's ``module.`` names in ``model.pt``; the payload alone in ``extra.pt``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {f"module.{k}": v for k, v in run["model"].state_dict().items()},
                "opt": run["optimizer"].state_dict(), "step": run["step"], "data": run["data"].get_state()},
               path / "model.pt")
    torch.save({"extra": Payload(os.environ["PAYLOAD_MARKER"])}, path / "extra.pt")


def load_strict_false(run, path):
    """Loads no weights: every name carries ``module.``, which ``strict=False`` drops silently."""
    state = torch.load(Path(path) / "model.pt", weights_only=True)
    run["model"].load_state_dict(state["model"], strict=False)
    run["optimizer"].load_state_dict(state["opt"])
    run["step"] = state["step"]
    run["data"].set_state(state["data"])


def save_generator_beside_payload(run, path):
    """The data order's generator state (a tensor) in the file with the payload, where only stubs see it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"model": run["model"].state_dict(), "opt": run["optimizer"].state_dict(), "step": run["step"]},
               path / "model.pt")
    torch.save({"data": run["data"].get_state(), "extra": Payload(os.environ["PAYLOAD_MARKER"])},
               path / "data.pt")


def load_forgets_the_data_order(run, path):
    state = torch.load(Path(path) / "model.pt", weights_only=True)
    run["model"].load_state_dict(state["model"])
    run["optimizer"].load_state_dict(state["opt"])
    run["step"] = state["step"]
