"""``safetensors``: ``pc.save(model, "model.safetensors")``, tied weights kept."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .base import SaveJob, SaveSide


class Safetensors(SaveSide):
    suffix = ".safetensors"
    default_save = "pc.save(model, 'model.safetensors')"

    def write(self, wrapped: nn.Module, path: Path, job: SaveJob) -> None:
        from ... import api

        api.save(wrapped, path)


SAFETENSORS = Safetensors()
