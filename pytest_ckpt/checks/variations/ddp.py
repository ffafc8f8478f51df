"""``ddp``, ``ddp+compile``, ``compile+ddp``: a real DistributedDataParallel over a gloo group.

The group (world size 1, this process) is opened by the plugin on first use
and torn down after the test; one the user already opened is reused.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import SaveJob, SaveSide, warm_up


def _ddp(module: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module)


class Ddp(SaveSide):
    default_save = "torch.save(DDP(model).state_dict())"

    def wrap(self, model: nn.Module, job: SaveJob) -> nn.Module:
        job.process_group()
        return _ddp(model)


class DDPCompile(SaveSide):
    """``torch.compile(DDP(model))``: keys ``_orig_mod.module.``."""

    default_save = "torch.save(torch.compile(DDP(model)).state_dict())"

    def wrap(self, model: nn.Module, job: SaveJob) -> nn.Module:
        job.process_group()
        wrapped = torch.compile(_ddp(model), backend=job.compile_backend)
        warm_up(wrapped, job.inputs)
        return wrapped


class CompileDDP(SaveSide):
    """``DDP(torch.compile(model))``: keys ``module._orig_mod.``."""

    default_save = "torch.save(DDP(torch.compile(model)).state_dict())"

    def wrap(self, model: nn.Module, job: SaveJob) -> nn.Module:
        job.process_group()
        wrapped = _ddp(torch.compile(model, backend=job.compile_backend))
        warm_up(wrapped, job.inputs)
        return wrapped


DDP = Ddp()
DDP_COMPILE = DDPCompile()
COMPILE_DDP = CompileDDP()
