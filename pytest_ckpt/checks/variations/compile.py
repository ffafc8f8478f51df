"""``compile``: ``torch.compile(model)`` with the ``ckpt_compile_backend``; keys gain ``_orig_mod.``."""

from __future__ import annotations

import torch
from torch import nn

from .base import SaveJob, SaveSide, warm_up


class Compile(SaveSide):
    default_save = "torch.save(torch.compile(model).state_dict())"

    def wrap(self, model: nn.Module, job: SaveJob) -> nn.Module:
        compiled = torch.compile(model, backend=job.compile_backend)
        warm_up(compiled, job.inputs)
        return compiled


COMPILE = Compile()
