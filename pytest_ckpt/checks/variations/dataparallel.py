"""``dataparallel``: ``nn.DataParallel(model)`` (a passthrough on CPU); keys gain ``module.``."""

from __future__ import annotations

from torch import nn

from .base import SaveJob, SaveSide


class DataParallel(SaveSide):
    default_save = "torch.save(nn.DataParallel(model).state_dict())"

    def wrap(self, model: nn.Module, job: SaveJob) -> nn.Module:
        return nn.DataParallel(model)


DATAPARALLEL = DataParallel()
