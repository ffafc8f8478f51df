"""A little FSDP2 training loop whose resumed half may run on another number of ranks.

Each step trains on a global batch of 6 samples, split among the ranks the way DistributedSampler
splits (rank r takes every world-size-th sample from r). :func:`save` and :func:`load` keep the data
position as the samples consumed by all ranks (``run.offset``); the ``per_rank`` pair keeps what a
rank's own sampler yielded instead (``run.yielded``), which names other samples on another world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_state_dict, set_model_state_dict,
                                                     set_state_dict)

GLOBAL_BATCH = 6
DATA = torch.randn(96, 4, generator=torch.Generator().manual_seed(0))


@dataclass
class Run:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    offset: int = 0  # samples consumed by all ranks together
    yielded: int = 0  # samples this rank's sampler yielded


def start():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    return Run(model, torch.optim.AdamW(model.parameters(), lr=0.01))


def _train(run, index):
    x = DATA[index]
    y = x.sum(dim=1, keepdim=True)
    loss = F.mse_loss(run.model(x), y)
    run.optimizer.zero_grad()
    loss.backward()
    run.optimizer.step()
    return loss.detach(), (x, y)


def step(run):
    world, rank = dist.get_world_size(), dist.get_rank()
    index = torch.arange(run.offset + rank, run.offset + GLOBAL_BATCH, world)
    run.offset += GLOBAL_BATCH
    run.yielded += len(index)
    return _train(run, index)


def step_per_rank(run):
    """The sampler's position is this rank's own count: rank r's i-th sample is r + world * i."""
    world, rank = dist.get_world_size(), dist.get_rank()
    local = GLOBAL_BATCH // world
    index = rank + world * torch.arange(run.yielded, run.yielded + local)
    run.yielded += local
    run.offset += GLOBAL_BATCH
    return _train(run, index)


def _state(run, position):
    model, optimizer = get_state_dict(run.model, run.optimizer)
    return {"model": model, "optimizer": optimizer, position: getattr(run, position)}


def _save(run, path, position):
    dcp.save(_state(run, position), checkpoint_id=path)


def _load(run, path, position):
    held = _state(run, position)
    dcp.load(held, checkpoint_id=path)
    set_state_dict(run.model, run.optimizer, model_state_dict=held["model"], optim_state_dict=held["optimizer"])
    setattr(run, position, held[position])


def save(run, path):
    _save(run, path, "offset")


def load(run, path):
    _load(run, path, "offset")


def save_per_rank(run, path):
    _save(run, path, "yielded")


def load_per_rank(run, path):
    _load(run, path, "yielded")


def load_model_only(run, path):
    """Restores the weights and the data position, and leaves the optimizer as start built it."""
    held = {"model": get_model_state_dict(run.model), "offset": run.offset}
    dcp.load(held, checkpoint_id=path)
    set_model_state_dict(run.model, held["model"])
    run.offset = held["offset"]


def start_scalar():
    """A model with a 0-dim parameter, which FSDP2 refuses to shard."""
    run = start()
    run.model.temperature = nn.Parameter(torch.tensor(1.0))
    run.optimizer = torch.optim.AdamW(run.model.parameters(), lr=0.01)
    return run
